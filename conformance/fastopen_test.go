package conformance

// Data in the SYN (TCP Fast Open without a cookie, RFC 7413; what an
// RFC 8803 Transport Converter takes its Convert header in) between the
// engine and the kernel's MPTCP, both ways: the kernel's listener accepts
// SYN data when net.ipv4.tcp_fastopen has its server and "no cookie" bits
// (0x2, 0x200, and 0x400 for every listener), and its client sends SYN
// data without a cookie with TCP_FASTOPEN_CONNECT and the 0x4 bit. The
// accepted bytes are a prefix outside MPTCP's data sequence numbers, as
// Linux's MPTCP Fast Open counts them; a peer that ignores them gets them
// again as the first bytes of the stream.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/mptund/mptund/stack"
)

// tcpFastOpenConnect is TCP_FASTOPEN_CONNECT (uapi linux/tcp.h).
const tcpFastOpenConnect = 30

// TestEngineMPTCPSynData runs the four combinations of who sends the SYN
// data (engine or kernel) and whether the other end accepts it, over
// MPTCP: the receiver reads the request then a 4 MiB stream, the sender
// a 1 MiB answer, all verified by SHA-256; the kernel's counters show the
// Fast Open it did (TCPFastOpenPassive / TCPFastOpenActive) and no MPTCP
// error.
func TestEngineMPTCPSynData(t *testing.T) {
	r := newMPTCPRig(t, mptcpRigConfig{})
	request := []byte("CONNECT 192.0.2.10:443 HTTP/1.1\r\nHost: example.net\r\n\r\n")
	for _, tc := range []struct {
		name                 string
		engineClient, accept bool
	}{
		{"engine-to-kernel-accepting", true, true},
		{"engine-to-kernel-ignoring", true, false},
		{"kernel-to-engine-accepting", false, true},
		{"kernel-to-engine-ignoring", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sysctl := "0x5" // client, client without cookie
			if tc.accept {
				sysctl = "0x607" // and server, without cookie, on every listener
			}
			r.ns.Sysctl("net.ipv4.tcp_fastopen", sysctl)
			t.Cleanup(func() { r.ns.Sysctl("net.ipv4.tcp_fastopen", "1") })
			tcpBefore := r.kernelCounters(t)
			before := r.mptcpCounters(t)
			allBefore, err := r.ns.Counters()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var ec *stack.Conn
			var kc *net.TCPConn
			if tc.engineClient {
				ln := r.listenKernel(t, engKernel4, true)
				acc := acceptAsync(ln)
				ec, err = r.eng.DialTCPSynData(ctx, "tcp", nil, ln.Addr().(*net.TCPAddr), request)
				if err != nil {
					t.Fatalf("engine dial: %v", err)
				}
				k := <-acc
				if k == nil {
					t.Fatal("kernel accept failed")
				}
				kc = k.(*net.TCPConn)
			} else {
				ln, err := r.eng.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(engEngine4, 0)))
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				ln.SetAcceptSynData(tc.accept)
				acc := make(chan *stack.Conn, 1)
				go func() {
					c, _ := ln.AcceptTCP()
					acc <- c
				}()
				if err := r.ns.Do(func() error {
					d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
						var serr error
						if err := rc.Control(func(fd uintptr) {
							serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpFastOpenConnect, 1)
						}); err != nil {
							return err
						}
						return serr
					}}
					d.SetMultipathTCP(true)
					c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
					if err != nil {
						return err
					}
					kc = c.(*net.TCPConn)
					// With TCP_FASTOPEN_CONNECT the SYN leaves with the
					// first write.
					_, err = kc.Write(request)
					return err
				}); err != nil {
					t.Fatalf("kernel dial: %v", err)
				}
				if ec = <-acc; ec == nil {
					t.Fatal("engine accept failed")
				}
			}
			defer ec.Close()
			defer kc.Close()

			// The receiving end reads the request first.
			var reqEnd, ansEnd net.Conn = kc, ec
			if !tc.engineClient {
				reqEnd, ansEnd = ec, kc
			}
			reqEnd.SetReadDeadline(time.Now().Add(10 * time.Second))
			got := make([]byte, len(request))
			if _, err := io.ReadFull(reqEnd, got); err != nil || !bytes.Equal(got, request) {
				t.Fatalf("request read %q (%v)", got, err)
			}
			reqEnd.SetReadDeadline(time.Time{})
			// Then a stream each way, verified.
			streamCheck(t, ansEnd, reqEnd, 4<<20, 11)
			streamCheck(t, reqEnd, ansEnd, 1<<20, 12)

			// A kernel client whose SYN data was not accepted sends it
			// again on its third ACK with a DSS but neither MP_CAPABLE
			// nor a mapping, so its key never arrives: the connection
			// falls back to TCP (with the data intact), exactly as between
			// two kernels (Linux 6.18: the listener counts
			// MPCapableFallbackACK, the client MPCapableDataFallback).
			kernelFallsBack := !tc.engineClient && !tc.accept
			ci := ec.ConnInfo()
			switch {
			case kernelFallsBack:
				if ci.MPTCP || ci.Fallback == "" {
					t.Errorf("engine: MPTCP=%v fallback %q, want the fallback a kernel listener makes", ci.MPTCP, ci.Fallback)
				}
			case !ci.MPTCP || ci.Fallback != "":
				t.Errorf("engine: MPTCP=%v fallback %q", ci.MPTCP, ci.Fallback)
			}
			synData := ec.Info().SynData
			r.settle(t)
			after := r.mptcpCounters(t)
			allAfter, err := r.ns.Counters()
			if err != nil {
				t.Fatal(err)
			}
			logMovedCounters(t, tc.name, before, after)
			passive := int64(allAfter["TcpExtTCPFastOpenPassive"] - allBefore["TcpExtTCPFastOpenPassive"])
			active := int64(allAfter["TcpExtTCPFastOpenActive"] - allBefore["TcpExtTCPFastOpenActive"])
			t.Logf("%s: engine Info.SynData %d, kernel TCPFastOpenPassive +%d, TCPFastOpenActive +%d", tc.name, synData, passive, active)
			switch {
			case tc.engineClient && tc.accept:
				if synData != len(request) || passive != 1 {
					t.Errorf("engine SYN data acknowledged %d of %d bytes, kernel TCPFastOpenPassive +%d: want all, +1", synData, len(request), passive)
				}
			case tc.engineClient:
				if synData != 0 || passive != 0 {
					t.Errorf("SYN data acknowledged (%d bytes, TCPFastOpenPassive +%d) by a kernel that does not accept it", synData, passive)
				}
			case tc.accept:
				if synData != len(request) || active != 1 {
					t.Errorf("engine accepted %d bytes of the kernel's SYN data (TCPFastOpenActive +%d), want %d, +1", synData, active, len(request))
				}
			default:
				if synData != 0 {
					t.Errorf("engine accepted %d bytes of SYN data, not enabled", synData)
				}
			}
			if tc.engineClient {
				wantDeltas(t, tc.name, before, after, map[string]int64{"MPCapableSYNRX": 1, "MPCapableACKRX": 1})
			} else {
				wantDeltas(t, tc.name, before, after, map[string]int64{"MPCapableSYNTX": 1, "MPCapableSYNACKRX": 1})
			}
			if kernelFallsBack {
				checkMPTCPErrors(t, tc.name, before, after, "MPCapableDataFallback")
			} else {
				checkMPTCPErrors(t, tc.name, before, after)
			}
			checkNoAborts(t, tc.name, before, after)
			r.checkKernelCounters(t, tcpBefore)
		})
	}
}

// streamCheck sends n seeded bytes from w to r, half-closes w and checks
// that r read exactly them (SHA-256), then EOF.
func streamCheck(t *testing.T, w, r net.Conn, n int64, seed byte) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7) ^ seed
	}
	type res struct {
		sum [32]byte
		n   int
		err error
	}
	done := make(chan res, 1)
	go func() {
		b, err := io.ReadAll(r)
		done <- res{sha256.Sum256(b), len(b), err}
	}()
	if _, err := w.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	select {
	case got := <-done:
		if got.err != nil || got.sum != sha256.Sum256(data) {
			t.Fatalf("received %d bytes (%v), sent %d: SHA-256 differs or error", got.n, got.err, n)
		}
	case <-time.After(time.Minute):
		t.Fatal("stream did not finish within a minute")
	}
}
