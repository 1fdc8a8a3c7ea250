//go:build linux

package reliability_test

import (
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// privateServer is a PostgreSQL or MariaDB server of the test's own, in a temporary
// directory on a free port, so that a test can crash and restart it without touching the
// shared servers on 5432 and 3306 that other tests and benchmarks use at the same time.
// The server runs as a child of the test process and dies with it (Pdeathsig), and
// t.Cleanup stops it and removes its directory even when the test fails.
type privateServer struct {
	t       *testing.T
	dialect string
	bin     string // postgres or mariadbd
	dir     string // data directory, socket, logs
	port    int
	cred    *syscall.Credential // the OS user PostgreSQL runs as when the test runs as root
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	logPath string

	driverLog driverLog // the MySQL driver's log, kept out of the test output
}

// missingServer skips the test loudly when this machine cannot run a private server, and
// fails it under CI=true, where a skipped fault test would hide that it never ran.
func missingServer(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := "!!! " + fmt.Sprintf(format, args...) + ": the database-restart test does NOT run"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// postgresBinDir finds a directory with PostgreSQL's initdb and postgres: $AM_PG_BINDIR,
// else the newest /usr/lib/postgresql/*/bin (Debian's layout), else initdb on $PATH.
func postgresBinDir() string {
	var dirs []string
	if d := os.Getenv("AM_PG_BINDIR"); d != "" {
		dirs = append(dirs, d)
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(found, func(i, j int) bool { return pgMajor(found[i]) > pgMajor(found[j]) })
	dirs = append(dirs, found...)
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

// pgMajor is the version number in /usr/lib/postgresql/<major>/bin, so 16 sorts above 9.
func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// lookBinary finds a server program on $PATH or in the sbin directories, which a
// non-root $PATH often lacks.
func lookBinary(names ...string) string {
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/bin"} {
			if p := filepath.Join(d, name); isExecutable(p) {
				return p
			}
		}
	}
	return ""
}

// isExecutable reports whether path is a regular file with an execute bit.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// freePort asks the kernel for a free loopback port. Another process could take it before
// the server binds it; startServer then fails with the server's log, which says so.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPrivateServer creates, starts and registers the cleanup of a private server of
// dialect ("postgres" or "mysql"), with an empty database "amrel" for the test.
func startPrivateServer(t *testing.T, dialect string) *privateServer {
	t.Helper()
	s := &privateServer{t: t, dialect: dialect}
	var initCmd *exec.Cmd
	switch dialect {
	case "postgres":
		binDir := postgresBinDir()
		if binDir == "" {
			missingServer(t, "PostgreSQL server binaries (initdb, postgres) not found; install Debian's postgresql package or set AM_PG_BINDIR")
		}
		s.bin = filepath.Join(binDir, "postgres")
		if os.Geteuid() == 0 { // PostgreSQL refuses to run as root
			u, err := user.Lookup("postgres")
			if err != nil {
				missingServer(t, "running as root and there is no 'postgres' OS user to run PostgreSQL as (%v)", err)
			}
			uid, _ := strconv.ParseUint(u.Uid, 10, 32)
			gid, _ := strconv.ParseUint(u.Gid, 10, 32)
			s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		}
	case "mysql":
		s.bin = lookBinary("mariadbd", "mysqld")
		install := lookBinary("mariadb-install-db", "mysql_install_db")
		if s.bin == "" || install == "" {
			missingServer(t, "MariaDB server binaries (mariadbd, mariadb-install-db) not found; install Debian's mariadb-server package")
		}
		initCmd = exec.Command(install, "--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db",
			"--innodb-log-file-size=16M")
	default:
		t.Fatalf("privateServer: unknown dialect %q", dialect)
	}
	dir, err := os.MkdirTemp("", "amrel-"+dialect+"-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(s.cleanup)
	if s.cred != nil {
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	s.logPath = filepath.Join(dir, "server.log")
	s.port = freePort(t)
	data := filepath.Join(dir, "data")
	if dialect == "postgres" {
		initCmd = exec.Command(filepath.Join(filepath.Dir(s.bin), "initdb"), "-D", data, "-A", "trust", "-U", "postgres",
			"-E", "UTF8", "--locale=C", "--no-sync")
	} else {
		initCmd.Args = append(initCmd.Args, "--datadir="+data)
		if os.Geteuid() == 0 {
			initCmd.Args = append(initCmd.Args, "--user=root")
		}
	}
	initCmd.Dir = dir
	initCmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("privateServer: %s: %v\n%s", strings.Join(initCmd.Args, " "), err, out)
	}
	s.start()
	admin, err := open(dialect, s.dsn(""))
	if err != nil {
		t.Fatal(err)
	}
	defer closeGorm(admin)
	if err := admin.Exec("CREATE DATABASE amrel").Error; err != nil {
		t.Fatal(err)
	}
	return s
}

// args are the server's command line: only loopback, its own socket directory, and
// settings that keep a small test server light. Durability against a crash of the server
// process is kept (PostgreSQL writes WAL before a commit returns, MariaDB writes its log at
// each commit); only flushing to the disk is skipped, which matters for a machine crash only.
func (s *privateServer) args() []string {
	data := filepath.Join(s.dir, "data")
	port := strconv.Itoa(s.port)
	if s.dialect == "postgres" {
		return []string{"-D", data, "-p", port, "-k", s.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
			"-c", "max_connections=60", "-c", "shared_buffers=32MB"}
	}
	a := []string{"--no-defaults", "--datadir=" + data, "--port=" + port, "--socket=" + filepath.Join(s.dir, "mysqld.sock"),
		"--bind-address=127.0.0.1", "--pid-file=" + filepath.Join(s.dir, "mysqld.pid"), "--innodb-log-file-size=16M",
		"--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2", "--skip-name-resolve"}
	if os.Geteuid() == 0 {
		a = append(a, "--user=root")
	}
	return a
}

// start launches the server and waits until it accepts queries (after crash recovery,
// when it was crashed).
func (s *privateServer) start() {
	t := s.t
	t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child keeps its own descriptor
	if s.cred != nil {
		_ = os.Chown(s.logPath, int(s.cred.Uid), int(s.cred.Gid))
	}
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// PostgreSQL's SIGQUIT is its immediate shutdown, which also ends its backends;
	// SIGKILL would leave them behind, holding the data directory.
	death := syscall.SIGKILL
	if s.dialect == "postgres" {
		death = syscall.SIGQUIT
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: death}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(s.exited)
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			t.Fatalf("privateServer: %s exited while starting (%v); its log:\n%s", s.dialect, err, s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("privateServer: %s not accepting connections after 60s (%v); its log:\n%s", s.dialect, err, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ping opens one connection and runs a query on it.
func (s *privateServer) ping() error {
	db, err := open(s.dialect, s.dsn(""))
	if err != nil {
		return err
	}
	defer closeGorm(db)
	var one int
	return db.Raw("SELECT 1").Scan(&one).Error
}

// crash ends the server the way a crash does: MariaDB by SIGKILL, PostgreSQL by its
// immediate shutdown (SIGQUIT: every process exits at once, no checkpoint, crash recovery
// at the next start), and waits until it is gone. Open connections break.
func (s *privateServer) crash() {
	s.t.Helper()
	if !s.kill() {
		s.t.Fatalf("privateServer: %s did not exit after a crash signal; its log:\n%s", s.dialect, s.logTail())
	}
}

// kill signals the server to die at once and waits up to 30 s (then SIGKILLs it); it
// reports whether it exited in time.
func (s *privateServer) kill() bool {
	if s.cmd == nil {
		return true
	}
	sig := syscall.SIGKILL
	if s.dialect == "postgres" {
		sig = syscall.SIGQUIT
	}
	_ = s.cmd.Process.Signal(sig)
	ok := true
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		ok = false
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	return ok
}

// cleanup stops the server, if running, and removes its directory.
func (s *privateServer) cleanup() {
	s.kill()
	if s.t.Failed() {
		s.t.Logf("privateServer: %s log (end):\n%s", s.dialect, s.logTail())
	}
	if err := os.RemoveAll(s.dir); err != nil {
		s.t.Errorf("privateServer: remove %s: %v", s.dir, err)
	}
}

// dsn reaches database name on the server; "" is the server's default database
// (PostgreSQL's postgres, no database on MariaDB). Connect timeouts are short, so that a
// connection attempt during an outage fails fast instead of hanging.
func (s *privateServer) dsn(name string) string {
	if s.dialect == "postgres" {
		if name == "" {
			name = "postgres"
		}
		return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable connect_timeout=5", s.port, name)
	}
	return fmt.Sprintf("root:@tcp(127.0.0.1:%d)/%s?parseTime=true&interpolateParams=true&timeout=5s", s.port, name)
}

// open returns a handle on database name (see dsn), closed when the test ends. On
// MariaDB the driver's own log of broken connections ("invalid connection", hundreds of
// lines per outage) goes to driverLog instead of stderr.
func (s *privateServer) open(name string) *gorm.DB {
	s.t.Helper()
	var db *gorm.DB
	var err error
	if s.dialect == "mysql" {
		var cfg *mysqldriver.Config
		if cfg, err = mysqldriver.ParseDSN(s.dsn(name)); err != nil {
			s.t.Fatal(err)
		}
		cfg.Logger = &s.driverLog
		var connector driver.Connector
		if connector, err = mysqldriver.NewConnector(cfg); err != nil {
			s.t.Fatal(err)
		}
		db, err = gorm.Open(mysql.New(mysql.Config{Conn: sql.OpenDB(connector), DSNConfig: cfg}), &gorm.Config{Logger: logger.Discard})
	} else {
		db, err = open(s.dialect, s.dsn(name))
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { closeGorm(db) })
	return db
}

// driverLog counts what the MySQL driver logs, and keeps the first line.
type driverLog struct {
	mu    sync.Mutex
	lines int
	first string
}

// Print implements mysqldriver.Logger.
func (l *driverLog) Print(v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lines == 0 {
		l.first = fmt.Sprint(v...)
	}
	l.lines++
}

// String is the count and the first line, for the test log.
func (l *driverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lines == 0 {
		return "nothing"
	}
	return fmt.Sprintf("%d lines, the first %q", l.lines, l.first)
}

// logTail is the end of the server's log, for failure messages.
func (s *privateServer) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// closeGorm closes the connection pool behind db.
func closeGorm(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		_ = sqlDB.Close()
	}
}
