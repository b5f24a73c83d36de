package capture

import (
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is a wireguard/tun Device that records every packet read from or
// written to the device it wraps: reads as inbound (device to engine),
// writes as outbound (engine to device). Packets are recorded as the
// caller sees them: a read's packets after the device split the kernel's
// GSO super-packets, a write's packets before the device coalesces them.
// Everything else is the wrapped Device's.
//
// Give a Device to tun.New in place of the device itself to capture a
// TUN below its endpoint's receive coalescing (GRO). The tun package's
// endpoint exchanges packets with a wrapped device only through the Device
// interface (its direct-access path needs the device itself), so nothing
// bypasses the recording:
//
//	dev, _ := wgtun.CreateTUN(name, mtu)
//	ep, _ := tun.New(capture.NewDevice(dev, w, 0), mtu)
//
// Device is safe for concurrent use as far as the wrapped Device is.
type Device struct {
	wgtun.Device
	w   *Writer
	ifc int
}

var _ wgtun.Device = (*Device)(nil)

// NewDevice returns a Device recording the packets of dev on interface
// ifc of w. The caller keeps ownership of w and closes it after the
// Device.
func NewDevice(dev wgtun.Device, w *Writer, ifc int) *Device {
	return &Device{Device: dev, w: w, ifc: ifc}
}

// Read reads a batch from the wrapped device and records the packets it
// returned (also those of a batch cut short by an error).
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	if n > 0 {
		d.w.mu.Lock()
		for i := 0; i < n && i < len(bufs) && i < len(sizes); i++ {
			if end := offset + sizes[i]; sizes[i] > 0 && end <= len(bufs[i]) {
				_ = d.w.writeLocked(d.ifc, Inbound, bufs[i][offset:end], sizes[i])
			}
		}
		d.w.mu.Unlock()
	}
	return n, err
}

// Write records the packets of bufs (each starting at offset), then writes
// them to the wrapped device.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	d.w.mu.Lock()
	for _, b := range bufs {
		if offset < len(b) {
			_ = d.w.writeLocked(d.ifc, Outbound, b[offset:], len(b)-offset)
		}
	}
	d.w.mu.Unlock()
	return d.Device.Write(bufs, offset)
}

// Close closes the wrapped device and flushes the Writer (which stays
// open).
func (d *Device) Close() error {
	err := d.Device.Close()
	_ = d.w.Flush()
	return err
}
