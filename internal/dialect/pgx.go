package dialect

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// LISTEN needs pgx's own connection: database/sql has no notifications. This package
// reaches it through reflection rather than importing pgx, so that programs that do not use
// PostgreSQL do not link it: pgx's database/sql connection (*stdlib.Conn) has a method
// Conn() returning the *pgx.Conn, whose Exec and WaitForNotification are all LISTEN needs.
// pgx_test.go checks these shapes against the pgx this module requires, and pgxConnOf
// fails loudly (not with ErrNoListen, which means "poll") if a pgx connection no longer
// has them.

// pgxPkgPrefix is the import path prefix of pgx's packages.
const pgxPkgPrefix = "github.com/jackc/pgx/"

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
)

// errPgxShape reports a pgx whose connection no longer has the methods LISTEN uses.
var errPgxShape = errors.New("dialect: pgx's connection does not have the methods LISTEN uses (Conn().Exec, Conn().WaitForNotification); this pgx version is not supported")

// pgxConn is the *pgx.Conn under a database/sql connection of pgx.
type pgxConn struct {
	execM, waitM reflect.Value
}

// pgxConnOf returns the pgx connection under the database/sql driver connection dc. It
// returns ErrNoListen for a connection of another driver, errPgxShape for a pgx connection
// without the expected methods.
func pgxConnOf(dc any) (*pgxConn, error) {
	v := reflect.ValueOf(dc)
	if !v.IsValid() {
		return nil, fmt.Errorf("%w: no driver connection", ErrNoListen)
	}
	t := v.Type()
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if !strings.HasPrefix(t.PkgPath(), pgxPkgPrefix) {
		return nil, fmt.Errorf("%w: driver connection is %T, not pgx", ErrNoListen, dc)
	}
	m := v.MethodByName("Conn")
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 {
		return nil, fmt.Errorf("%w (%T has no Conn())", errPgxShape, dc)
	}
	c := m.Call(nil)[0]
	if c.Kind() != reflect.Pointer || c.IsNil() {
		return nil, fmt.Errorf("%w (%T.Conn() is %s)", errPgxShape, dc, c.Type())
	}
	execM, waitM := c.MethodByName("Exec"), c.MethodByName("WaitForNotification")
	if !execM.IsValid() || !waitM.IsValid() {
		return nil, fmt.Errorf("%w (%s)", errPgxShape, c.Type())
	}
	if et := execM.Type(); !et.IsVariadic() || et.NumIn() != 3 || et.In(0) != contextType ||
		et.In(1).Kind() != reflect.String || et.NumOut() != 2 || et.Out(1) != errorType {
		return nil, fmt.Errorf("%w (%s.Exec is %s)", errPgxShape, c.Type(), et)
	}
	if wt := waitM.Type(); wt.NumIn() != 1 || wt.In(0) != contextType || wt.NumOut() != 2 || wt.Out(1) != errorType {
		return nil, fmt.Errorf("%w (%s.WaitForNotification is %s)", errPgxShape, c.Type(), wt)
	}
	return &pgxConn{execM: execM, waitM: waitM}, nil
}

// exec runs a statement without arguments.
func (c *pgxConn) exec(ctx context.Context, q string) error {
	return errorOf(c.execM.Call([]reflect.Value{reflect.ValueOf(&ctx).Elem(), reflect.ValueOf(q)})[1])
}

// waitForNotification blocks until a notification arrives, ctx is done or the connection
// fails.
func (c *pgxConn) waitForNotification(ctx context.Context) error {
	return errorOf(c.waitM.Call([]reflect.Value{reflect.ValueOf(&ctx).Elem()})[1])
}

func errorOf(v reflect.Value) error {
	if v.IsNil() {
		return nil
	}
	return v.Interface().(error)
}
