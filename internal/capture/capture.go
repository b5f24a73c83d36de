// Package capture records the packets of the engine's links in a pcapng
// file (draft-ietf-opsawg-pcapng), so that a session can be examined with
// tshark or with mptund's own inspector (package pcaps).
//
// A [Writer] owns the file. Each captured link is one pcapng interface
// (Interface Description Block, §4.2) of link type LINKTYPE_RAW: the
// records are bare IPv4 or IPv6 packets, as a TUN carries them. Every
// record is an Enhanced Packet Block (§4.3) with a nanosecond timestamp
// and the epb_flags option (§4.3.1) giving its direction: inbound for
// packets the engine received from the link, outbound for packets it
// sent. Records are cut to the snap length (65535 bytes by default), the
// original length kept.
//
// Two taps feed a Writer:
//
//   - [Device] wraps a wireguard/tun Device: it records what the TUN
//     device hands over and takes, below the tun package's endpoint. Its
//     inbound records are the packets as read (kernel GSO super-packets
//     already split into MTU-sized segments with valid checksums), before
//     gVisor's GRO merges them and before the endpoint drops those that fail
//     verification. Use it for TUNs.
//   - [Endpoint] wraps any stack.LinkEndpoint (a simulated link, a TUN
//     endpoint): it records what the stack writes to the link and what the
//     link delivers to the stack. Below a link that coalesces (the tun
//     package's endpoint with GRO on), inbound records are the merged
//     segments as delivered: one large packet per merge, whose TCP checksum
//     (and IPv4 header checksum) may be stale.
//
// Recording copies the packet bytes into the Writer's buffer under its
// mutex and never keeps a reference to the packet. The file is written in
// large chunks (Options.BufferSize); [Writer.Flush] and [Writer.Close]
// write out what is buffered.
package capture

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Defaults used when the corresponding Options field is zero.
const (
	// DefaultSnapLen is the snap length: the largest IP packet without
	// jumbograms.
	DefaultSnapLen = 65535
	// DefaultBufferSize is how many bytes are buffered before a write to
	// the underlying file.
	DefaultBufferSize = 1 << 20
	// DefaultInterface names the first interface when Options.Interface
	// is empty.
	DefaultInterface = "engine"
)

// Sentinel errors.
var (
	// ErrClosed is returned by operations on a closed Writer.
	ErrClosed = errors.New("capture: writer closed")
	// ErrNoInterface is returned for an interface index that was never
	// added.
	ErrNoInterface = errors.New("capture: no such interface")
)

// Direction is a record's direction, as the pcapng epb_flags option encodes
// it (bits 0-1, draft-ietf-opsawg-pcapng §4.3.1).
type Direction uint8

// Directions, seen from the engine.
const (
	// Inbound: received by the engine from the link.
	Inbound Direction = Direction(pcapgo.NgEpbFlagDirectionInbound)
	// Outbound: sent by the engine to the link.
	Outbound Direction = Direction(pcapgo.NgEpbFlagDirectionOutbound)
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "inbound"
	case Outbound:
		return "outbound"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// Options configures a Writer. The zero value is usable.
type Options struct {
	// Interface names interface 0, for example the TUN's name;
	// DefaultInterface if empty. More interfaces can be added with
	// Writer.AddInterface.
	Interface string
	// SnapLen is the largest record; longer packets are cut (their
	// original length is kept). Zero or negative selects DefaultSnapLen.
	SnapLen int
	// BufferSize is the size of the write buffer; zero or negative selects
	// DefaultBufferSize.
	BufferSize int
	// Now timestamps the records. nil selects the wall clock read when the
	// Writer is created, advanced by the monotonic clock (so timestamps
	// never go backwards when the wall clock is stepped). Timestamps are
	// made non-decreasing in any case: a Now that goes backwards repeats
	// the previous timestamp.
	Now func() time.Time
}

// Stats counts a Writer's records.
type Stats struct {
	// Packets and Bytes count the records written and the original
	// lengths of their packets.
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// Truncated counts records cut to the snap length.
	Truncated uint64 `json:"truncated"`
	// Dropped counts packets not recorded: the Writer was closed, or had
	// failed to write (see Writer.Err).
	Dropped uint64 `json:"dropped"`
}

// Writer writes a pcapng capture. Its methods are safe for concurrent use;
// records are written in the order the calls take its mutex.
type Writer struct {
	mu      sync.Mutex
	ng      *pcapgo.NgWriter
	buf     *bufio.Writer
	file    io.Closer // closed by Close, if the Writer opened it
	now     func() time.Time
	snapLen int
	nifc    int
	last    time.Time // timestamp of the previous record
	scratch []byte    // snapLen bytes, for copying out of packet buffers
	flags   [4]pcapgo.NgEpbFlags
	err     error // first write error; sticky
	closed  bool
	stats   Stats
}

// NewWriter starts a pcapng capture on w: it writes the section header and
// the description of interface 0, and flushes them. The caller keeps ownership of w: Close
// flushes but does not close it.
func NewWriter(w io.Writer, opts Options) (*Writer, error) {
	if opts.SnapLen <= 0 {
		opts.SnapLen = DefaultSnapLen
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if opts.Interface == "" {
		opts.Interface = DefaultInterface
	}
	if opts.Now == nil {
		base := time.Now()
		opts.Now = func() time.Time { return base.Add(time.Since(base)) }
	}
	cw := &Writer{
		buf:     bufio.NewWriterSize(w, opts.BufferSize),
		now:     opts.Now,
		snapLen: opts.SnapLen,
		scratch: make([]byte, opts.SnapLen),
	}
	for i := range cw.flags {
		cw.flags[i].Direction = pcapgo.NgEpbFlag(i)
	}
	ng, err := pcapgo.NewNgWriterInterface(cw.buf, cw.iface(opts.Interface), pcapgo.NgWriterOptions{
		SectionInfo: pcapgo.NgSectionInfo{
			Hardware:    runtime.GOARCH,
			OS:          runtime.GOOS,
			Application: "mptund",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("capture: writing pcapng header: %w", err)
	}
	cw.ng = ng
	cw.nifc = 1
	// Write the header out now: the file is a valid (empty) capture from
	// the start, and an unwritable destination fails here.
	if err := cw.flushLocked(); err != nil {
		return nil, err
	}
	return cw, nil
}

// Create creates (or truncates) the file at path and starts a capture in
// it; Close closes the file.
func Create(path string, opts Options) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	w, err := NewWriter(f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	w.file = f
	return w, nil
}

func (w *Writer) iface(name string) pcapgo.NgInterface {
	return pcapgo.NgInterface{
		Name:                name,
		OS:                  runtime.GOOS,
		LinkType:            layers.LinkTypeRaw,
		SnapLength:          uint32(w.snapLen),
		TimestampResolution: 9, // nanoseconds
	}
}

// AddInterface describes one more captured link and returns its index for
// WritePacket, NewDevice and NewEndpoint.
func (w *Writer) AddInterface(name string) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	id, err := w.ng.AddInterface(w.iface(name))
	if err != nil {
		w.err = fmt.Errorf("capture: %w", err)
		return 0, w.err
	}
	w.nifc = id + 1
	return id, nil
}

// WritePacket records the IP packet data on interface ifc. data is copied
// before WritePacket returns. It returns the Writer's first write error,
// ErrClosed, or ErrNoInterface; the packet is then counted as dropped.
func (w *Writer) WritePacket(ifc int, dir Direction, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(ifc, dir, data, len(data))
}

// writeLocked writes one record of the packet whose first bytes are data
// and whose length is size; data is cut to the snap length here.
func (w *Writer) writeLocked(ifc int, dir Direction, data []byte, size int) error {
	switch {
	case w.closed:
		w.stats.Dropped++
		return ErrClosed
	case w.err != nil:
		w.stats.Dropped++
		return w.err
	case ifc < 0 || ifc >= w.nifc:
		w.stats.Dropped++
		return fmt.Errorf("%w: %d", ErrNoInterface, ifc)
	}
	if len(data) > w.snapLen {
		data = data[:w.snapLen]
	}
	if size < len(data) {
		size = len(data)
	}
	ts := w.now()
	if ts.Before(w.last) {
		ts = w.last
	}
	w.last = ts
	ci := gopacket.CaptureInfo{
		Timestamp:      ts,
		CaptureLength:  len(data),
		Length:         size,
		InterfaceIndex: ifc,
	}
	if err := w.ng.WritePacketWithOptions(ci, data, pcapgo.NgPacketOptions{Flags: &w.flags[dir&3]}); err != nil {
		w.err = fmt.Errorf("capture: %w", err)
		w.stats.Dropped++
		return w.err
	}
	w.stats.Packets++
	w.stats.Bytes += uint64(size)
	if len(data) < size {
		w.stats.Truncated++
	}
	return nil
}

// Flush writes buffered records to the underlying writer.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.flushLocked()
}

func (w *Writer) flushLocked() error {
	if w.err != nil {
		return w.err
	}
	if err := w.ng.Flush(); err != nil {
		w.err = fmt.Errorf("capture: %w", err)
		return w.err
	}
	if err := w.buf.Flush(); err != nil {
		w.err = fmt.Errorf("capture: %w", err)
		return w.err
	}
	return nil
}

// Close flushes the capture and, if Create opened the file, closes it. It
// returns the first error the Writer met. Later packets are dropped;
// calling Close again returns ErrClosed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	err := w.flushLocked()
	w.closed = true
	if w.file != nil {
		if cerr := w.file.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("capture: %w", cerr)
		}
	}
	return err
}

// Err returns the first write error, or nil.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Stats returns a snapshot of the counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}
