// Package tun attaches a TUN device (golang.zx2c4.com/wireguard/tun) to a
// gVisor network stack as a stack.LinkEndpoint.
//
// The device is opened with IFF_VNET_HDR, so wireguard/tun does the Linux
// virtio offloads: a read returns a batch of packets, the kernel's TSO/GSO
// super-packets split into MTU-sized segments with freshly computed
// checksums; a write coalesces adjacent TCP segments of one flow into a GSO
// super-packet when their headers allow it (the same TCP options, no PSH
// before the last one), which the kernel then receives as one skb.
//
// Receive path: one goroutine per Endpoint reads batches from the device,
// verifies checksums (see Endpoint), feeds the packets to gVisor's GRO
// (gvisor.dev/gvisor/pkg/tcpip/stack/gro), flushes it at the end of each
// batch, and so delivers coalesced TCP segments to the stack.
//
// Transmit path: WritePackets copies each packet into a reusable buffer with
// headroom for the virtio header and hands the batch to the device in one
// call. Give the NIC a FIFO queueing discipline
// (gvisor.dev/gvisor/pkg/tcpip/link/qdisc/fifo) so that packets reach
// WritePackets in batches; without one every packet is written alone and
// nothing can be coalesced.
//
// Nothing here is specific to MPTCP (RFC 8684): the engine's path NICs and
// the app-facing NIC are both Endpoints.
package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// writeOffset is the headroom left in front of every packet handed to
// Device.Write. wireguard/tun writes its virtio-net header
// (sizeof(struct virtio_net_hdr) = 10 bytes) just before the packet and
// rejects smaller offsets.
const writeOffset = 16

// maxPacket is the largest IP packet (without jumbograms). Write buffers are
// this large beyond the headroom so wireguard/tun can coalesce up to a 64 KiB
// super-packet in place.
const maxPacket = 1<<16 - 1

// eventsDrainTimeout bounds how long Wait waits, after Close, for the device
// to close its event channel (wireguard/tun does so promptly).
const eventsDrainTimeout = 5 * time.Second

// ErrClosed is returned by operations on a closed Endpoint.
var ErrClosed = errors.New("tun: endpoint closed")

// EventKind says what changed on the device.
type EventKind int

// Device events surfaced to the handler given with WithEventHandler. Each is
// reported only on a real change of state, although the device may repeat
// itself.
const (
	// LinkUp: the kernel interface is up and running (IFF_RUNNING).
	LinkUp EventKind = iota + 1
	// LinkDown: the kernel interface went down; writes fail until it is up.
	LinkDown
	// MTUChanged: the kernel interface's MTU changed. The Endpoint's MTU
	// has already been updated to Event.MTU.
	MTUChanged
)

func (k EventKind) String() string {
	switch k {
	case LinkUp:
		return "link-up"
	case LinkDown:
		return "link-down"
	case MTUChanged:
		return "mtu-changed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change on the device.
type Event struct {
	Kind EventKind
	// MTU is the device MTU after the event (0 if it could not be read).
	MTU int
}

// Option configures an Endpoint.
type Option func(*config)

type config struct {
	gro     bool
	gso     bool
	onEvent func(Event)
}

// WithEventHandler installs fn to receive link up/down and MTU events. fn
// runs on the Endpoint's event goroutine, one event at a time, from the
// moment New starts (the first LinkUp may come before the Endpoint is
// attached to a NIC, or before New returns); it may call
// into the stack (for example Stack.DisableNIC / EnableNIC) but must not call
// Close followed by Wait, which waits for that goroutine.
func WithEventHandler(fn func(Event)) Option {
	return func(c *config) { c.onEvent = fn }
}

// WithGRO turns receive coalescing and the endpoint's own checksum
// verification on (the default) or off. With it off the Endpoint declares no
// checksum offload and the stack verifies every checksum itself; every
// packet it delivers is one wire packet (and WithGSO has no effect).
func WithGRO(on bool) Option {
	return func(c *config) { c.gro = on }
}

// WithGSO turns the segmentation offloads of a Linux TUN on (the default)
// or off; see "Segmentation offload" in Endpoint. It needs WithGRO on. Off,
// or on a device that is not a wireguard/tun Linux TUN with the virtio
// header, every packet goes through the Device's Read and Write.
func WithGSO(on bool) Option {
	return func(c *config) { c.gso = on }
}

// Endpoint is a stack.LinkEndpoint backed by a wireguard/tun Device.
//
// # Checksums and pkt.RXChecksumValidated
//
// With GRO on (the default) the Endpoint declares
// stack.CapabilityRXChecksumOffload. It has to: gVisor's GRO merges
// segments without rewriting the IPv4 header checksum or the TCP checksum,
// so a merged segment only verifies if nobody checks again. The NIC then
// sets pkt.RXChecksumValidated = true on every packet it receives from this
// endpoint (stack/nic.go overwrites the flag from the capabilities), and
// IPv4, TCP and UDP skip their checks. To keep that honest the Endpoint
// checks before delivery what they would have checked, and drops what fails
// (Stats.RXBadChecksum, Stats.RXMalformed):
//
//   - the IPv4 header checksum of every IPv4 packet;
//   - the TCP or UDP checksum (with pseudo-header) of every packet that is
//     not a fragment, IPv4 and IPv6 (extension headers walked);
//
// so for a TCP segment delivered with RXChecksumValidated set, the checksum
// of every original segment it was built from has been verified, while the
// checksum field it carries may be stale (merged) and must not be checked
// again. The exception is a packet whose transport checksum cannot be checked
// alone: IP fragments and IPv6 packets with a routing header (counted in
// Stats.RXUnverified). They are delivered, and after reassembly the stack
// will not check their transport checksum. TCP senders set DF and Linux
// never fragments TCP, so for TCP this does not arise in practice. ICMP
// checksums are always checked by the stack itself.
//
// The kernel side never hands us a TCP segment with a checksum left to
// compute: wireguard/tun completes CHECKSUM_PARTIAL packets
// (VIRTIO_NET_HDR_F_NEEDS_CSUM) and computes a full checksum for every
// segment it cuts from a GSO super-packet. Packets the kernel forwards keep
// the checksum they arrived with, which may be wrong; those are the drops
// counted above.
//
// With GRO off no capability is declared and the stack checks everything.
//
// # Segmentation offload
//
// On a Linux TUN opened with IFF_VNET_HDR (wireguard/tun's CreateTUN does)
// and with WithGRO and WithGSO on (the defaults), the Endpoint reads and
// writes the device itself, one packet and its virtio header per system
// call, rather than through the Device's Read and Write:
//
//   - Receive: a TCP super-packet from the kernel (its TSO or GRO output,
//     up to 64 KiB) is delivered to the stack whole instead of being split
//     into MTU-sized packets, checksummed, verified and merged again by GRO;
//     see classifyOffloaded for what is checked. The kernel's partial
//     checksums (CHECKSUM_PARTIAL, locally generated packets) are trusted,
//     as its own loopback does; packets the kernel did not vouch for are
//     verified as above. The kernel is told not to send UDP super-packets.
//   - Transmit: the Endpoint implements stack.GSOEndpoint with
//     stack.HostGSOSupported, so TCP may hand it one packet of up to 64 KiB
//     with stack.GSO options; it is written with a virtio header asking the
//     kernel to segment it (VIRTIO_NET_HDR_GSO_TCPV4/6, which the kernel's
//     own stack receives unsegmented) and to complete its checksum
//     (NEEDS_CSUM). Packets without GSO options still go through the
//     Device's Write, which coalesces them.
//
// Stats count wire packets: a super-packet counts as the number of
// segments it stands for (RXPackets, TXPackets) and once in RXGSO/TXGSO.
//
// # Concurrency
//
// All methods may be called from any goroutine. WritePackets calls are
// serialised internally (the device serialises writes anyway). The receive
// goroutine is started by the first Attach with a non-nil dispatcher and
// delivers packets (and runs GRO) on that goroutine only; packets read while
// detached are dropped. Close stops the goroutines and closes the device;
// Wait blocks until they have returned.
type Endpoint struct {
	dev   wgtun.Device
	name  string
	cfg   config
	batch int // device batch size, fixed for the device's lifetime

	mtu     atomic.Uint32 // MTU reported to the stack
	readMTU atomic.Uint32 // largest packet the device is expected to return
	up      atomic.Bool

	mu         sync.Mutex // guards dispatcher, started, onClose
	dispatcher stack.NetworkDispatcher
	started    bool
	onClose    func()

	batchEnd atomic.Pointer[func()] // see OnReceiveBatchEnd

	closed atomic.Bool
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	// Receive state, owned by the reader goroutine.
	rx rxState

	// Transmit state.
	txMu sync.Mutex
	tx   txState

	// raw is direct access to a Linux TUN for the segmentation offloads,
	// or nil; fixed at New.
	raw rawDevice

	stats counters
}

var (
	_ stack.LinkEndpoint = (*Endpoint)(nil)
	_ stack.GSOEndpoint  = (*Endpoint)(nil)
)

// rawDevice reads and writes single packets with their virtio header
// (see "Segmentation offload" in Endpoint).
type rawDevice interface {
	// read reads one packet: its virtio header into hdr (virtioNetHdrLen
	// bytes) and the packet into buf; it returns the packet's length. If
	// it has to wait for a packet, it calls idle (when not nil) once
	// first, on the calling goroutine.
	read(hdr, buf []byte, idle func()) (int, error)
	// writev writes one packet, virtio header first, made of the
	// concatenation of bufs (at most maxIovecs of them).
	writev(bufs [][]byte) error
}

// Create opens (or creates) the TUN interface name with the given MTU in the
// network namespace of the calling thread and returns an Endpoint for it. The
// kernel side (addresses, link up) is left to the caller.
func Create(name string, mtu int, opts ...Option) (*Endpoint, error) {
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("tun: creating %q: %w", name, err)
	}
	ep, err := New(dev, mtu, opts...)
	if err != nil {
		dev.Close()
		return nil, err
	}
	return ep, nil
}

// New returns an Endpoint using dev, which it owns from now on: Close closes
// it. mtu is what the Endpoint reports to the stack until the device says
// otherwise.
func New(dev wgtun.Device, mtu int, opts ...Option) (*Endpoint, error) {
	if mtu < header.IPv4MinimumMTU || mtu > maxPacket {
		return nil, fmt.Errorf("tun: MTU %d out of range [%d, %d]", mtu, header.IPv4MinimumMTU, maxPacket)
	}
	bs := dev.BatchSize()
	if bs < 1 {
		return nil, fmt.Errorf("tun: device batch size %d", bs)
	}
	name, _ := dev.Name()
	e := &Endpoint{
		dev:   dev,
		name:  name,
		cfg:   config{gro: true, gso: true},
		batch: bs,
		done:  make(chan struct{}),
	}
	for _, o := range opts {
		o(&e.cfg)
	}
	if e.cfg.gro && e.cfg.gso {
		e.raw = openRaw(dev)
	}
	e.mtu.Store(uint32(mtu))
	e.readMTU.Store(uint32(mtu))
	e.rx.init(e)
	e.wg.Add(1)
	go e.eventLoop()
	return e, nil
}

// Name returns the kernel interface name.
func (e *Endpoint) Name() string { return e.name }

// Device returns the underlying device. Reading from or writing to it while
// the Endpoint runs would race with the Endpoint.
func (e *Endpoint) Device() wgtun.Device { return e.dev }

// LinkUp reports whether the device last reported itself up.
func (e *Endpoint) LinkUp() bool { return e.up.Load() }

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint. It changes what the stack is told,
// not the kernel interface, until the next device event re-reads the kernel
// MTU; receive buffers grow to match if needed.
func (e *Endpoint) SetMTU(mtu uint32) {
	e.mtu.Store(mtu)
	raiseTo(&e.readMTU, mtu)
}

// raiseTo sets v to at least x.
func raiseTo(v *atomic.Uint32, x uint32) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// MaxHeaderLength implements stack.LinkEndpoint. There is no link header;
// the virtio header is added on copy.
func (*Endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: a TUN has none.
func (*Endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint; it is ignored.
func (*Endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint. See Endpoint for why RX
// checksum offload is declared when GRO is on.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	if e.cfg.gro {
		return stack.CapabilityRXChecksumOffload
	}
	return stack.CapabilityNone
}

// OnReceiveBatchEnd installs fn (nil removes it) to run on the receive
// goroutine at the end of every batch of received packets: after the
// packets of one Device read were delivered, or, with raw device access
// (see "Segmentation offload"), when the device has no packet ready or
// maxRxBatch packets were delivered back to back. A stack can use it to
// send one acknowledgment per batch rather than per packet. fn must not
// block for long: receiving waits for it.
func (e *Endpoint) OnReceiveBatchEnd(fn func()) {
	if fn == nil {
		e.batchEnd.Store(nil)
		return
	}
	e.batchEnd.Store(&fn)
}

// SupportedGSO implements stack.GSOEndpoint: stack.HostGSOSupported when
// the segmentation offloads are in use (see Endpoint), otherwise
// stack.GSONotSupported.
func (e *Endpoint) SupportedGSO() stack.SupportedGSO {
	if e.raw != nil {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// GSOMaxSize implements stack.GSOEndpoint: the largest packet (IP header
// included) the stack may hand over with GSO options.
func (e *Endpoint) GSOMaxSize() uint32 {
	if e.raw != nil {
		return maxPacket
	}
	return 0
}

// ARPHardwareType implements stack.LinkEndpoint.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint; there is no link header.
func (*Endpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint; there is no link header.
func (*Endpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Attach implements stack.LinkEndpoint. The first non-nil dispatcher starts
// the receive goroutine; a nil dispatcher (the NIC being removed) makes it
// drop what it reads until the next Attach.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
	if d != nil && !e.started && !e.closed.Load() {
		e.started = true
		e.wg.Add(1)
		go e.readLoop()
	}
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

func (e *Endpoint) currentDispatcher() stack.NetworkDispatcher {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher
}

// SetOnCloseAction implements stack.LinkEndpoint. The stack uses it to remove
// the NIC when the endpoint closes by itself (Close, or the device going
// away).
func (e *Endpoint) SetOnCloseAction(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onClose = fn
}

// Close implements stack.LinkEndpoint: it runs the on-close action (which
// removes the NIC from its stack), stops the goroutines and closes the
// device. It does not wait for the goroutines; see Wait. Close may be called
// more than once and from within the on-close action.
func (e *Endpoint) Close() {
	if !e.closed.CompareAndSwap(false, true) {
		return
	}
	e.mu.Lock()
	fn := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if fn != nil {
		fn()
	}
	close(e.done)
	// Closing the device unblocks a pending Read and Write and, for
	// wireguard/tun, closes the event channel.
	_ = e.dev.Close()
}

// Closed reports whether Close has been called.
func (e *Endpoint) Closed() bool { return e.closed.Load() }

// Wait implements stack.LinkEndpoint: it waits until the receive and event
// goroutines have returned. Call it after Close (it returns at once only if
// they were never started).
func (e *Endpoint) Wait() { e.wg.Wait() }

// eventLoop surfaces the device's events until its event channel closes.
// It must keep draining: wireguard/tun's listeners block on a full channel.
func (e *Endpoint) eventLoop() {
	defer e.wg.Done()
	events := e.dev.Events()
	var drain <-chan time.Time
	done := e.done
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			if !e.closed.Load() {
				e.handleDeviceEvent(ev)
			}
		case <-done:
			// Give the device a bounded time to close its channel.
			done = nil
			drain = time.After(eventsDrainTimeout)
		case <-drain:
			return
		}
	}
}

// handleDeviceEvent turns a device event into Endpoint events. For a TUN it
// re-reads the interface state from the kernel (see queryLink); otherwise it
// trusts the event and the device's MTU method.
func (e *Endpoint) handleDeviceEvent(ev wgtun.Event) {
	up, upKnown := ev&wgtun.EventUp != 0, ev&(wgtun.EventUp|wgtun.EventDown) != 0
	mtu := 0
	if st, err := queryLink(e.dev, e.name); err == nil {
		up, upKnown, mtu = st.up, true, st.mtu
	} else if ev&wgtun.EventMTUUpdate != 0 {
		if m, err := e.dev.MTU(); err == nil {
			mtu = m
		}
	}
	if mtu > 0 && mtu <= maxPacket && uint32(mtu) != e.mtu.Load() {
		e.mtu.Store(uint32(mtu))
		e.readMTU.Store(uint32(mtu))
		e.emit(Event{Kind: MTUChanged, MTU: mtu})
	}
	if upKnown && up != e.up.Load() {
		e.up.Store(up)
		kind := LinkDown
		if up {
			kind = LinkUp
		}
		e.emit(Event{Kind: kind, MTU: int(e.mtu.Load())})
	}
}

func (e *Endpoint) emit(ev Event) {
	if e.cfg.onEvent != nil {
		e.cfg.onEvent(ev)
	}
}

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() Stats { return e.stats.snapshot() }

// isClosedErr reports whether err means the device is gone.
func isClosedErr(err error) bool {
	return errors.Is(err, os.ErrClosed)
}
