package natsrelay

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SubjectMaxLen is the longest subject the relay publishes to, in bytes.
const SubjectMaxLen = 1024

// CheckSubject reports whether subject is one the relay can publish to: 1 to
// SubjectMaxLen bytes of valid UTF-8, dot-separated non-empty tokens, no whitespace or
// control characters, no wildcard token (* or >), and not reserved: a subject starting
// with "$" ($JS.API, $SYS, $KV, ...) or "_INBOX." is a request to the server or an
// answer to one (a publish to $JS.API.STREAM.PURGE.<stream> purges the stream). The
// error wraps ErrInvalidSubject.
func CheckSubject(subject string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: %.80q: %s", ErrInvalidSubject, subject, why)
	}
	switch {
	case subject == "":
		return bad("empty")
	case len(subject) > SubjectMaxLen:
		return bad(fmt.Sprintf("%d bytes, more than %d", len(subject), SubjectMaxLen))
	case !utf8.ValidString(subject):
		return bad("not valid UTF-8")
	case strings.IndexFunc(subject, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return bad("contains whitespace or a control character")
	case strings.HasPrefix(subject, "$") || strings.HasPrefix(subject, "_INBOX."):
		return bad("is reserved: $-subjects are the server's API, _INBOX. its replies")
	}
	for tok := range strings.SplitSeq(subject, ".") {
		switch tok {
		case "":
			return bad("has an empty token (a leading, trailing or doubled dot)")
		case "*", ">":
			return bad("has a wildcard token; a publish needs a literal subject")
		}
	}
	return nil
}
