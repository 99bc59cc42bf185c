//go:build e2e

package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

// The tests start emulators, gRPC clients and processes: none may outlive them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
