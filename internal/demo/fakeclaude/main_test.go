package fakeclaude_test

import (
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"
)

// TestMain gives every Eventually a generous default: the suite runs beside other
// builds, at load averages of 8 and more, where gomega's 1 s default flakes.
func TestMain(m *testing.M) {
	gomega.SetDefaultEventuallyTimeout(30 * time.Second)
	os.Exit(m.Run())
}
