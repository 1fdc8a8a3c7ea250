// Package ident generates the ids of messages and schedules: 26-character, URL-safe,
// lexically ordered by creation time (a millisecond timestamp then randomness, in
// Crockford base32, as in ULID), so that rows created in one millisecond keep their order
// within a process.
package ident

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// Generator makes ids. Its zero value is ready; it is safe for concurrent use.
type Generator struct {
	mu     sync.Mutex
	lastMs uint64
	hi     uint16 // top 16 of the 80 random bits
	lo     uint64 // low 64 of the 80 random bits
}

// New returns an id for time now.
func (g *Generator) New(now time.Time) string {
	ms := uint64(now.UnixMilli())
	g.mu.Lock()
	if ms <= g.lastMs {
		// Same (or earlier) millisecond: increment the random part, keeping order.
		ms = g.lastMs
		g.lo++
		if g.lo == 0 {
			g.hi++
		}
	} else {
		var b [10]byte
		_, _ = rand.Read(b[:])                         // crypto/rand.Read never fails on supported platforms
		g.hi = binary.BigEndian.Uint16(b[:2]) & 0x7fff // leave headroom for increments
		g.lo = binary.BigEndian.Uint64(b[2:])
		g.lastMs = ms
	}
	hi, lo := g.hi, g.lo
	g.mu.Unlock()

	var out [26]byte
	// 48-bit time in 10 characters (50 bits, the top two zero).
	for i := 9; i >= 0; i-- {
		out[i] = alphabet[ms&31]
		ms >>= 5
	}
	// 80 random bits in 16 characters.
	for i := 25; i >= 10; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | uint64(hi&31)<<59
		hi >>= 5
	}
	return string(out[:])
}
