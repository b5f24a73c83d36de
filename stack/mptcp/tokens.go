package mptcp

import (
	"io"
	"sync"

	"github.com/mptund/mptund/handshake"
)

// Tokens is an engine's table of connection tokens (RFC 8684 §3.2): each
// connection's key is chosen so that its token is locally unique, which
// lets an MP_JOIN find its connection. Safe for concurrent use.
type Tokens struct {
	mu sync.Mutex
	m  map[uint32]*Conn
}

// NewTokens returns an empty table.
func NewTokens() *Tokens { return &Tokens{m: make(map[uint32]*Conn)} }

// NewKey draws a random key whose token is unused and records c under it.
func (t *Tokens) NewKey(r io.Reader, c *Conn) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key, err := handshake.NewKey(r, func(tok uint32) bool { _, ok := t.m[tok]; return ok })
	if err != nil {
		return 0, err
	}
	t.m[handshake.Token(key)] = c
	return key, nil
}

// Claim records c under token if the token is free, and reports whether
// it was (a connection rebuilt from a SYN-cookie ACK brings its key).
func (t *Tokens) Claim(token uint32, c *Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[token]; ok {
		return false
	}
	t.m[token] = c
	return true
}

// Release forgets token if it still belongs to c.
func (t *Tokens) Release(token uint32, c *Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[token] == c {
		delete(t.m, token)
	}
}

// Lookup returns the connection holding token, or nil.
func (t *Tokens) Lookup(token uint32) *Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[token]
}

// Len returns the number of tokens in use.
func (t *Tokens) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// All returns the connections holding a token (a snapshot).
func (t *Tokens) All() []*Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*Conn, 0, len(t.m))
	for _, c := range t.m {
		out = append(out, c)
	}
	return out
}
