package tun

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// tunOffloads is what the Endpoint lets the kernel hand it on a raw device:
// partial checksums and TCP segmentation (TSO) super-packets, not UDP
// segmentation (USO), which would have to be split again for the stack.
const tunOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// linuxRaw reads and writes a Linux TUN opened with IFF_VNET_HDR directly,
// one packet per system call with its virtio header, instead of through
// wireguard/tun's Read and Write (which split every super-packet into MTU
// sized packets and compute their checksums, and merge writes by copying).
// It goes through the file's syscall.RawConn, so reads block in the
// runtime's poller and a concurrent Close is safe. Not safe for concurrent
// reads or concurrent writes (the Endpoint has one reader goroutine and
// serialises writes); a read and a write may run at the same time.
type linuxRaw struct {
	rc syscall.RawConn

	riov   [2]unix.Iovec
	rn     int
	rerrno unix.Errno
	readFn func(fd uintptr) bool
	// idle is read's idle callback, called at most once per read when
	// the device has nothing to return.
	idle     func()
	idleDone bool

	wiov    []unix.Iovec
	wn      int
	werrno  unix.Errno
	writeFn func(fd uintptr) bool
}

// openRaw returns raw access to dev if it is a wireguard/tun Linux TUN with
// the virtio header enabled, and restricts the kernel's offloads to
// tunOffloads; nil otherwise (other devices, including wrappers such as a
// capturing Device, keep the Device interface).
func openRaw(dev wgtun.Device) rawDevice {
	nt, ok := dev.(*wgtun.NativeTun)
	if !ok {
		return nil
	}
	f := nt.File()
	if f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	usable := false
	if err := rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return
		}
		if err := unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); err != nil || ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
			return
		}
		usable = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tunOffloads) == nil
	}); err != nil || !usable {
		return nil
	}
	r := &linuxRaw{rc: rc, wiov: make([]unix.Iovec, 0, maxIovecs)}
	r.readFn = r.doRead
	r.writeFn = r.doWrite
	return r
}

func (r *linuxRaw) doRead(fd uintptr) bool {
	n, _, e := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&r.riov[0])), uintptr(len(r.riov)))
	if e == unix.EAGAIN || e == unix.EINTR {
		if e == unix.EAGAIN && r.idle != nil && !r.idleDone {
			// Nothing queued: let the caller finish its batch before the
			// poller parks us. A packet arriving meanwhile makes the
			// poller return at once (edge-triggered readiness is
			// recorded), so nothing is missed.
			r.idleDone = true
			r.idle()
		}
		return false
	}
	r.rn, r.rerrno = int(n), e
	return true
}

func (r *linuxRaw) doWrite(fd uintptr) bool {
	n, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&r.wiov[0])), uintptr(len(r.wiov)))
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	r.wn, r.werrno = int(n), e
	return true
}

// read implements rawDevice.
func (r *linuxRaw) read(hdr, buf []byte, idle func()) (int, error) {
	r.riov[0].Base, r.riov[1].Base = &hdr[0], &buf[0]
	r.riov[0].SetLen(len(hdr))
	r.riov[1].SetLen(len(buf))
	r.idle, r.idleDone = idle, false
	err := r.rc.Read(r.readFn)
	r.riov[0].Base, r.riov[1].Base = nil, nil
	r.idle = nil
	if err != nil {
		return 0, fmt.Errorf("%w: %v", os.ErrClosed, err)
	}
	if e := r.rerrno; e != 0 {
		if e == unix.EBADFD {
			return 0, os.ErrClosed
		}
		return 0, os.NewSyscallError("readv", e)
	}
	if r.rn < len(hdr) {
		return 0, fmt.Errorf("tun: short read of %d bytes", r.rn)
	}
	return r.rn - len(hdr), nil
}

// writev implements rawDevice.
func (r *linuxRaw) writev(bufs [][]byte) error {
	if len(bufs) > maxIovecs {
		return fmt.Errorf("tun: %d iovecs, at most %d", len(bufs), maxIovecs)
	}
	total := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		var v unix.Iovec
		v.Base = &b[0]
		v.SetLen(len(b))
		r.wiov = append(r.wiov, v)
		total += len(b)
	}
	if total == 0 {
		return nil
	}
	err := r.rc.Write(r.writeFn)
	clear(r.wiov)
	r.wiov = r.wiov[:0]
	if err != nil {
		return fmt.Errorf("%w: %v", os.ErrClosed, err)
	}
	if e := r.werrno; e != 0 {
		if e == unix.EBADFD {
			return os.ErrClosed
		}
		return os.NewSyscallError("writev", e)
	}
	if r.wn != total {
		return fmt.Errorf("tun: short write of %d of %d bytes", r.wn, total)
	}
	return nil
}
