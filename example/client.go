package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// client calls the example's own API, as a user of the service would.
type client struct{ base string }

func (c *client) do(ctx context.Context, method, path string, body any, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (c *client) placeOrder(ctx context.Context, item string, cents int64) (Order, error) {
	var o Order
	err := c.do(ctx, http.MethodPost, "/orders", Order{Item: item, Cents: cents}, &o)
	return o, err
}

func (c *client) post(ctx context.Context, path string) error {
	return c.do(ctx, http.MethodPost, path, nil, nil)
}

func (c *client) get(ctx context.Context, path string) error {
	return c.do(ctx, http.MethodGet, path, nil, nil)
}
