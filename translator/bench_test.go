package translator_test

import (
	"testing"

	"github.com/cloudzero-otel/cloudzeroexporter/translator/translatortest"
)

// BenchmarkTranslate: the documented workload, see translatortest.BenchmarkTranslate.
func BenchmarkTranslate(b *testing.B) { translatortest.BenchmarkTranslate(b) }
