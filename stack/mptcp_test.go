package stack

import (
	"fmt"
	"testing"
)

// TestMPTCPEnginePair runs MPTCP between two engines (both default to it)
// with and without DSS checksums, and with one side disabled (fallback):
// data verified both ways, and ConnInfo tells what was negotiated.
func TestMPTCPEnginePair(t *testing.T) {
	for _, tc := range []struct {
		name        string
		a, b        MPTCPConfig
		mptcp, csum bool
	}{
		{name: "plain-mapping", mptcp: true},
		{name: "checksum-client", a: MPTCPConfig{Checksums: true}, mptcp: true, csum: true},
		{name: "checksum-server", b: MPTCPConfig{Checksums: true}, mptcp: true, csum: true},
		{name: "server-disabled", b: MPTCPConfig{Disabled: true}},
		{name: "client-disabled", a: MPTCPConfig{Disabled: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newPipePair(t, 1500, Options{})
			a.opts.MPTCP, b.opts.MPTCP = tc.a, tc.b
			d, c := connectPair(t, a, b, addrB4.Addr())
			transferVerified(t, d, c, 4<<20+123, 1)
			transferVerified(t, c, d, 4<<20+321, 2)
			for _, end := range []struct {
				name string
				conn *Conn
				off  bool
			}{{"dialer", d, tc.a.Disabled}, {"acceptor", c, tc.b.Disabled}} {
				ci := end.conn.ConnInfo()
				t.Logf("%s: %s", end.name, summary(ci))
				if ci.MPTCP != tc.mptcp || ci.Checksums != tc.csum {
					t.Errorf("%s: MPTCP %v checksums %v, want %v %v", end.name, ci.MPTCP, ci.Checksums, tc.mptcp, tc.csum)
				}
				if tc.mptcp && (ci.LocalToken == 0 || ci.RemoteToken == 0) {
					t.Errorf("%s: tokens %08x %08x", end.name, ci.LocalToken, ci.RemoteToken)
				}
				if !tc.mptcp && !end.off && ci.Fallback == "" {
					t.Errorf("%s: plain TCP without a fallback reason", end.name)
				}
			}
		})
	}
}

func summary(ci ConnInfo) string {
	s := fmt.Sprintf("mptcp=%v state=%s fallback=%q tokens=%08x/%08x csum=%v", ci.MPTCP, ci.State, ci.Fallback, ci.LocalToken, ci.RemoteToken, ci.Checksums)
	if ci.Data != nil {
		st := ci.Data.Stats
		s += fmt.Sprintf(" maps out/in %d/%d dataacks %d bytes sent/acked/recv %d/%d/%d", st.MappingsSent, st.MappingsReceived, st.DataAcksReceived, st.BytesSent, st.BytesAcked, st.BytesReceived)
	}
	return s
}

// TestMPTCPLargeWrites sends in 256 KiB writes, which fill the window with
// 64 KiB mappings; queue drops at the NIC leave many of them pending behind
// a hole at the receiver (the mapping table once refused them and reset).
func TestMPTCPLargeWrites(t *testing.T) {
	a, b := newPipePair(t, 1500, Options{})
	d, c := connectPair(t, a, b, addrB4.Addr())
	done := make(chan error, 1)
	go func() {
		n, _, err := recvStream(c)
		if err == nil && n != 32<<20 {
			err = fmt.Errorf("received %d bytes", n)
		}
		done <- err
	}()
	buf := make([]byte, 256<<10)
	for sent := 0; sent < 32<<20; sent += len(buf) {
		if _, err := d.Write(buf); err != nil {
			t.Fatalf("write after %d bytes: %v (peer: %v)", sent, err, c.ConnInfo().State)
		}
	}
	d.CloseWrite()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ci := d.ConnInfo(); !ci.MPTCP {
		t.Fatalf("not MPTCP: %s", summary(ci))
	}
}
