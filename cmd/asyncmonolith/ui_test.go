package main_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// startUI starts `asyncmonolith ui` with env and returns the dashboard's URL; the process
// is interrupted when the test ends, and must exit 0.
func startUI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("ui did not exit cleanly on SIGINT: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("ui did not stop on SIGINT")
		}
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		_, _ = io.Copy(io.Discard, out)
		exited <- cmd.Wait()
	}()
	select {
	case l := <-line:
		url, ok := strings.CutPrefix(l, "dashboard on ")
		if !ok {
			t.Fatalf("ui printed %q", l)
		}
		return strings.Fields(url)[0]
	case <-time.After(20 * time.Second):
		t.Fatal("ui printed no address")
	}
	return ""
}

func getStatus(t *testing.T, url, user, password string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestUIServesTheDashboard(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.OpenDSN(t, "sqlite")
	p := am.New(am.Config{})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&am.PoisonedMessage{ID: "p1", ConsumerType: "Mailer", PayloadType: "Job", Payload: "{}", InsertID: "i1",
		LastError: "boom", PoisonedAt: time.Now().UnixMilli()}).Error; err != nil {
		t.Fatal(err)
	}
	url := startUI(t, nil, "--db", "sqlite", "--dsn", dsn, "ui", "--addr", "127.0.0.1:0")
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("url %q", url)
	}
	status, body := getStatus(t, url+"poisoned", "", "")
	if status != http.StatusOK || !strings.Contains(body, "p1") || !strings.Contains(body, "boom") {
		t.Fatalf("GET poisoned = %d:\n%s", status, body)
	}
	// With credentials in the environment, every request needs them.
	authed := startUI(t, []string{"AM_UI_USER=ops", "AM_UI_PASSWORD=s3cret"}, "--db", "sqlite", "--dsn", dsn, "ui", "--addr", "127.0.0.1:0", "--read-only")
	if status, _ := getStatus(t, authed, "", ""); status != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d", status)
	}
	if status, _ := getStatus(t, authed, "ops", "wrong"); status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", status)
	}
	status, body = getStatus(t, authed+"poisoned", "ops", "s3cret")
	if status != http.StatusOK || strings.Contains(body, `method="post"`) {
		t.Fatalf("read-only with credentials: %d", status)
	}
}

func TestUIRefusesAnOpenAddressWithoutAuth(t *testing.T) {
	t.Parallel()
	dsn := filepath.Join(t.TempDir(), "x.db")
	_, errOut, code := cli(t, "--db", "sqlite", "--dsn", dsn, "ui", "--addr", "0.0.0.0:0")
	if code != 2 || !strings.Contains(errOut, "not a loopback address") {
		t.Fatalf("ui on 0.0.0.0 without auth: exit %d, %s", code, errOut)
	}
	_, errOut, code = cli(t, "--db", "sqlite", "--dsn", dsn, "ui", "--addr", ":0")
	if code != 2 || !strings.Contains(errOut, "not a loopback address") {
		t.Fatalf("ui on :0 without auth: exit %d, %s", code, errOut)
	}
}

// Half the credentials is a usage error, not a dashboard without auth or with an empty
// password; with both set, the open address is served and asks for them. (Not parallel:
// it sets the environment.)
func TestUICredentialsComeInPairs(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "x.db")
	for _, env := range [][2]string{{"ops", ""}, {"", "s3cret"}} {
		t.Setenv("AM_UI_USER", env[0])
		t.Setenv("AM_UI_PASSWORD", env[1])
		for _, addr := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
			_, errOut, code := cli(t, "--db", "sqlite", "--dsn", dsn, "ui", "--addr", addr)
			if code != 2 || !strings.Contains(errOut, "set both AM_UI_USER and AM_UI_PASSWORD") {
				t.Fatalf("user %q, password %q, %s: exit %d, %s", env[0], env[1], addr, code, errOut)
			}
		}
	}
	t.Setenv("AM_UI_USER", "")
	t.Setenv("AM_UI_PASSWORD", "")
	url := startUI(t, []string{"AM_UI_USER=ops", "AM_UI_PASSWORD=s3cret"}, "--db", "sqlite", "--dsn", dsn, "ui", "--addr", "0.0.0.0:0")
	url = strings.Replace(url, "0.0.0.0", "127.0.0.1", 1)
	for _, c := range [][2]string{{"", ""}, {"ops", ""}, {"", "s3cret"}, {"Ops", "s3cret"}, {"ops", "s3cret "}, {"s3cret", "ops"}} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if c != [2]string{} {
			req.SetBasicAuth(c[0], c[1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(res.Header.Get("WWW-Authenticate"), "Basic") {
			t.Fatalf("credentials %q: %d, want 401 with a Basic challenge", c, res.StatusCode)
		}
	}
	if status, _ := getStatus(t, url+"static/dashboard.css", "ops", "s3cret"); status != http.StatusOK {
		t.Fatalf("right credentials: %d", status)
	}
}
