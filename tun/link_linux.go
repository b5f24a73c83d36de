package tun

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// linkState is the kernel's view of the interface.
type linkState struct {
	up  bool // IFF_UP and IFF_RUNNING
	mtu int
}

// queryLink reads the kernel state of the TUN interface behind dev.
//
// It exists because wireguard/tun's own reports are not enough on current
// kernels: its down detection (a zero-length write failing with EIO) sees
// EINVAL first since the virtio header check moved ahead of the IFF_UP check,
// and it reports EventDown from netlink only if the same read also carried an
// up message. It does report EventMTUUpdate for every RTM_NEWLINK of the
// interface, so the Endpoint re-reads the state on each event.
//
// Interfaces are looked up by name through a socket of the calling thread's
// network namespace, and a TUN created in another namespace (a test's, entered
// only by the creating thread) is invisible there, or a same-named interface
// is found. So ask the TUN for its own namespace (ioctl SIOCGSKNS, Linux 4.9+)
// and query from a thread that has entered it. Without the privilege for that
// (setns needs CAP_SYS_ADMIN) the current namespace is used.
func queryLink(dev wgtun.Device, name string) (linkState, error) {
	f := dev.File()
	if f == nil {
		return linkState{}, fmt.Errorf("tun: device has no file")
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return linkState{}, err
	}
	nsfd := -1
	var errno unix.Errno
	if err := sc.Control(func(fd uintptr) {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.SIOCGSKNS, 0)
		nsfd, errno = int(r), e
	}); err != nil || errno != 0 {
		return ifaceState(name)
	}
	defer unix.Close(nsfd)
	var st linkState
	var qerr error
	if err := inNetns(nsfd, func() { st, qerr = ifaceState(name) }); err != nil {
		return ifaceState(name)
	}
	return st, qerr
}

// ifaceState reads flags and MTU of the interface name in the calling
// thread's network namespace.
func ifaceState(name string) (linkState, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return linkState{}, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return linkState{}, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return linkState{}, fmt.Errorf("tun: SIOCGIFFLAGS %s: %w", name, err)
	}
	flags := ifr.Uint16()
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFMTU, ifr); err != nil {
		return linkState{}, fmt.Errorf("tun: SIOCGIFMTU %s: %w", name, err)
	}
	return linkState{
		up:  flags&unix.IFF_UP != 0 && flags&unix.IFF_RUNNING != 0,
		mtu: int(ifr.Uint32()),
	}, nil
}

// inNetns runs fn on a locked OS thread that has entered the network
// namespace nsfd, then restores the thread. A thread that cannot be restored
// stays locked, so the Go runtime discards it when the goroutine ends.
func inNetns(nsfd int, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("tun: restoring network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}
