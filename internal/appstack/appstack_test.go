package appstack

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// bridge moves packets written to from into to, until ctx ends.
func bridge(ctx context.Context, from, to *channel.Endpoint) {
	for {
		pkt := from.ReadContext(ctx)
		if pkt == nil {
			return
		}
		buf := pkt.ToBuffer()
		np := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buf})
		to.InjectInbound(pkt.NetworkProtocolNumber, np)
		np.DecRef()
		pkt.DecRef()
	}
}

// setup returns an "application host" stack (gVisor's TCP standing in for
// the kernel) whose default route leads into an app stack run with
// handle.
func setup(t *testing.T, handle func(*Request)) (*stack.Stack, *Stack) {
	appLink := channel.New(1024, 1500, "")
	hostLink := channel.New(1024, 1500, "")
	ctx, cancel := context.WithCancel(context.Background())
	go bridge(ctx, appLink, hostLink)
	go bridge(ctx, hostLink, appLink)
	as, err := New(appLink, Config{}, handle)
	if err != nil {
		t.Fatal(err)
	}
	host := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if err := host.CreateNIC(1, hostLink); err != nil {
		t.Fatal(err)
	}
	host.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4([4]byte{10, 0, 0, 2}).WithPrefix()}, stack.AddressProperties{})
	host.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	t.Cleanup(func() {
		cancel()
		host.Close()
		host.Wait()
		as.Close()
	})
	return host, as
}

func dial(host *stack.Stack, dst string) (*gonet.TCPConn, error) {
	ap := netip.MustParseAddrPort(dst)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, host, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}, ipv4.ProtocolNumber)
}

func TestAcceptRefuseDrop(t *testing.T) {
	seen := make(chan netip.AddrPort, 10)
	host, as := setup(t, func(r *Request) {
		seen <- r.Dst
		switch r.Dst.Port() {
		case 80:
			c, err := r.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			go func() {
				b, _ := io.ReadAll(c)
				c.Write([]byte(strings.ToUpper(string(b))))
				c.CloseWrite()
				io.ReadAll(c)
				c.Close()
			}()
		case 81:
			r.Refuse()
		default:
			r.Drop()
		}
	})
	// Accepted: the answer comes from the address the application asked
	// for, half-close works both ways.
	c, err := dial(host, "192.0.2.7:80")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RemoteAddr().String(); got != "192.0.2.7:80" {
		t.Errorf("remote %s", got)
	}
	c.Write([]byte("hello"))
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "HELLO" {
		t.Errorf("read %q, %v", b, err)
	}
	c.Close()
	if d := <-seen; d.String() != "192.0.2.7:80" {
		t.Errorf("handler saw %v", d)
	}
	// Refused: the application sees a RST.
	_, err = dial(host, "198.51.100.1:81")
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("refused destination: %v", err)
	}
	// Dropped: no answer, the application times out.
	_, err = dial(host, "198.51.100.1:82")
	if err == nil {
		t.Errorf("dropped destination answered")
	}
	if st := as.Stats(); st.Accepted != 1 || st.Refused != 1 {
		t.Errorf("stats %+v", as.Stats())
	}
}

func TestAbortResetsTheApplication(t *testing.T) {
	host, _ := setup(t, func(r *Request) {
		c, err := r.Accept()
		if err != nil {
			return
		}
		go func() {
			buf := make([]byte, 1)
			c.Read(buf)
			c.Abort()
			c.Abort() // twice is fine
		}()
	})
	c, err := dial(host, "192.0.2.9:443")
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "reset") {
		t.Errorf("read after abort: %v, want a reset", err)
	}
}
