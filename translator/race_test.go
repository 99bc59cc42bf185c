//go:build race

package translator_test

// The race detector allocates on its own: allocation counts are meaningless.
const raceEnabled = true
