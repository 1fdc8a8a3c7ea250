package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/asyncmonolith/asyncmonolith/dashboard"
)

// Credentials of the standalone dashboard's basic auth: from the environment only, so
// they never show in a process list or a shell history.
const (
	envUIUser     = "AM_UI_USER"
	envUIPassword = "AM_UI_PASSWORD"
)

// ui serves the dashboard until ctx ends (Ctrl-C).
func (c *cli) ui(ctx context.Context, rest []string) error {
	var addr string
	var readOnly bool
	if err := c.flags("ui", rest, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "127.0.0.1:8080", "listen address (a non-loopback one needs "+envUIUser+" and "+envUIPassword+")")
		fs.BoolVar(&readOnly, "read-only", false, "show no actions and refuse them")
		c.railsFlag(fs)
	}); err != nil {
		return err
	}
	user, password := os.Getenv(envUIUser), os.Getenv(envUIPassword)
	if (user == "") != (password == "") {
		return usageError{"ui: set both " + envUIUser + " and " + envUIPassword + ", or neither"}
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError{fmt.Sprintf("ui: --addr %q: %v", addr, err)}
	}
	if !loopback(host) && user == "" {
		return usageError{fmt.Sprintf("ui: refusing to serve the dashboard on %q, which is not a loopback address, without basic auth: set %s and %s", addr, envUIUser, envUIPassword)}
	}
	p, err := c.plugin()
	if err != nil {
		return err
	}
	var opts []dashboard.Option
	if readOnly {
		opts = append(opts, dashboard.ReadOnly())
	}
	var h http.Handler = dashboard.New(p, opts...)
	if user != "" {
		h = basicAuth(h, user, password)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Fprintf(c.out, "dashboard on http://%s/ (Ctrl-C stops)\n", ln.Addr())
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// basicAuth lets through the requests with the user and password, compared in constant time.
func basicAuth(next http.Handler, user, password string) http.Handler {
	wantUser, wantPassword := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, pw, ok := r.BasicAuth()
		gotUser, gotPassword := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(pw))
		if !ok || subtle.ConstantTimeCompare(gotUser[:], wantUser[:])&subtle.ConstantTimeCompare(gotPassword[:], wantPassword[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="asyncmonolith", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
