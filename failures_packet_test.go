package asyncmonolith_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

// packetCases are MariaDB's max_allowed_packet cases: three payloads of two fifths of the
// limit each (6.4 MB at the default 16 MiB), poisoned in one batch (one multi-row INSERT would exceed the limit), and
// one payload just under the limit, poisoned with a long (but storable) error text.
func packetCases() []failureCase {
	limit := func(t *testing.T, e *env) int {
		var n int
		if err := e.db.Raw("SELECT @@max_allowed_packet").Scan(&n).Error; err != nil || n == 0 {
			t.Fatalf("max_allowed_packet: %d, %v", n, err)
		}
		return n
	}
	return []failureCase{
		{
			name: "PoisonSeveralMBPayloadsInOneBatch",
			bad:  3,
			payload: func(t *testing.T, e *env, i int) Bad {
				return Bad{Blob: strings.Repeat(string(rune('a'+i)), limit(t, e)*2/5)}
			},
			consume: func(context.Context, *am.Message[Bad]) error { return errors.New("blob refused") },
			reason: func(t *testing.T, where, s string) {
				t.Helper()
				if !strings.Contains(s, "blob refused") {
					t.Errorf("%s: stored error %q", where, s)
				}
			},
		},
		{
			name: "PoisonPayloadJustUnderMaxAllowedPacket",
			payload: func(t *testing.T, e *env, i int) Bad {
				// The INSERT that produces it (its other columns and SQL text) fits in 1 KiB.
				return Bad{Blob: strings.Repeat("z", limit(t, e)-1024-len(`{"blob":""}`))}
			},
			consume: func(context.Context, *am.Message[Bad]) error {
				return errors.New("refused: " + strings.Repeat("x", 3000))
			},
			reason: func(t *testing.T, where, s string) {
				t.Helper()
				if !strings.HasPrefix(s, "refused: xxx") || len(s) != len("refused: ")+3000 {
					t.Errorf("%s: stored error (%d bytes) %.40q…", where, len(s), s)
				}
			},
		},
	}
}
