//go:build !linux

package relay

// lowWater does nothing where SO_RCVLOWAT's effect on the poller is not Linux's.
type lowWater struct{}

const streamMark = bulkSize / 2

func (*lowWater) streaming(int) {}
func (*lowWater) waiting(int)   {}
func (*lowWater) up() bool      { return false }
