package tcp_test

import (
	"testing"
	"time"

	"github.com/mptund/mptund/stack/tcp"
	"github.com/mptund/mptund/stack/tcp/simnet"
)

func TestBasicTransferAndClose(t *testing.T) {
	link := simnet.LinkConfig{Delay: 10 * time.Millisecond}
	p := newPair(t, pairOpts{ab: link, ba: link})
	p.establish()
	data := randBytes(1, 200_000)
	got, _ := p.transfer(p.a, p.b, data, true, 30*time.Second)
	sameData(t, data, got)
	if s := p.b.State(); s != tcp.StateCloseWait {
		t.Fatalf("server state %v, want CLOSE-WAIT", s)
	}
	p.b.Close()
	if !p.net.RunUntil(func() bool { return p.b.State() == tcp.StateClosed && p.a.State() == tcp.StateTimeWait }, 5*time.Second) {
		t.Fatalf("close: client %v server %v", p.a.State(), p.b.State())
	}
}
