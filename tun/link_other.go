//go:build !linux

package tun

import (
	"errors"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// linkState is the kernel's view of the interface.
type linkState struct {
	up  bool
	mtu int
}

// queryLink is not implemented outside Linux; the Endpoint then relies on the
// device's events alone.
func queryLink(wgtun.Device, string) (linkState, error) {
	return linkState{}, errors.ErrUnsupported
}
