package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// syncBuffer is an io.Writer for output written by several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The demo cancels its orders in one database and stops each shipment once in the other.
func TestDemo(t *testing.T) {
	url := os.Getenv("AM_NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	if nc, err := nats.Connect(url, nats.Timeout(2*time.Second)); err != nil {
		msg := "!!! NATS " + url + " is NOT reachable (" + err.Error() + "): the example's test does not run"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	} else {
		nc.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out syncBuffer
	if err := run(ctx, options{role: "both", n: 7, url: url}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for i := 1; i <= 7; i++ {
		for _, want := range []string{"order " + strconv.Itoa(i) + " cancelled", "shipment of order " + strconv.Itoa(i) + " stopped"} {
			if strings.Count(got, want+" ")+strings.Count(got, want+";") != 1 {
				t.Errorf("output has %q %d times, want once:\n%s", want, strings.Count(got, want), got)
			}
		}
	}
	if !strings.Contains(got, "done: 7 orders cancelled in orders.db, 7 shipments stopped") {
		t.Fatalf("output:\n%s", got)
	}
}
