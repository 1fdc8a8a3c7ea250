package dialect

import (
	"errors"
	"reflect"
)

// Drivers' errors are classified without importing the drivers, so that a program links
// only the driver it uses: pgx's errors by a method, go-sql-driver/mysql's by the shape of
// its error struct. driver_test.go checks both against the real drivers' errors, and fails
// if a driver's error type changes shape.

// sqlState is the SQLSTATE of a PostgreSQL error, or "". pgconn.PgError exposes
// SQLState().
func sqlState(err error) string {
	var st interface{ SQLState() string }
	if errors.As(err, &st) {
		return st.SQLState()
	}
	return ""
}

// mysqlErrorPkg and mysqlErrorType name go-sql-driver/mysql's server error, *MySQLError,
// whose only method is Error(): its exported field Number (uint16) is the server's error
// number.
const (
	mysqlErrorPkg  = "github.com/go-sql-driver/mysql"
	mysqlErrorType = "MySQLError"
)

// mysqlErrorNumber is the server error number of the first *mysql.MySQLError in err's
// tree, and whether there is one.
func mysqlErrorNumber(err error) (uint16, bool) {
	var n uint16
	found := walkErrors(err, func(e error) bool {
		v := reflect.ValueOf(e)
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			return false
		}
		t := v.Elem().Type()
		if t.PkgPath() != mysqlErrorPkg || t.Name() != mysqlErrorType {
			return false
		}
		f := v.Elem().FieldByName("Number")
		if !f.IsValid() || f.Kind() != reflect.Uint16 {
			return false
		}
		n = uint16(f.Uint())
		return true
	})
	return n, found
}

// mysqlInvalidConnText is the text of go-sql-driver/mysql's ErrInvalidConn, the error of a
// connection that broke under a statement.
const mysqlInvalidConnText = "invalid connection"

// mysqlInvalidConn reports whether err's tree holds go-sql-driver/mysql's ErrInvalidConn
// (an errors.New value: only its text identifies it).
func mysqlInvalidConn(err error) bool {
	return walkErrors(err, func(e error) bool {
		_, wraps := e.(interface{ Unwrap() error })
		_, wrapsMany := e.(interface{ Unwrap() []error })
		return !wraps && !wrapsMany && e.Error() == mysqlInvalidConnText
	})
}

// walkErrors reports whether match holds for an error of err's tree, depth first, as
// errors.As walks it.
func walkErrors(err error, match func(error) bool) bool {
	for err != nil {
		if match(err) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if walkErrors(e, match) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}
