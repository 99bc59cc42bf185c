package cloudzerometric

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// inProcessHost stands in for the collector: its only extension is the
// file_storage of WithStorageDir.
type inProcessHost struct {
	storage    extension.Extension // nil without WithStorageDir
	extensions map[component.ID]component.Component
}

func (h *inProcessHost) GetExtensions() map[component.ID]component.Component { return h.extensions }

func (h *inProcessHost) shutdown(ctx context.Context) error {
	if h.storage == nil {
		return nil
	}
	return h.storage.Shutdown(ctx)
}

// newFileStorage starts the collector's file_storage extension on dir.
func newFileStorage(ctx context.Context, dir string, set exporter.Settings) (extension.Extension, component.ID, error) {
	f := filestorage.NewFactory()
	id := component.NewIDWithName(f.Type(), "cloudzerometric")
	cfg := f.CreateDefaultConfig().(*filestorage.Config)
	cfg.Directory, cfg.Compaction.Directory, cfg.CreateDirectory = dir, dir, true
	if err := confmap.Validate(cfg); err != nil {
		return nil, id, fmt.Errorf("cloudzero: storage directory: %w", err)
	}
	ext, err := f.Create(ctx, extension.Settings{ID: id, TelemetrySettings: set.TelemetrySettings, BuildInfo: set.BuildInfo}, cfg)
	if err != nil {
		return nil, id, fmt.Errorf("cloudzero: storage directory: %w", err)
	}
	if err := ext.Start(ctx, &inProcessHost{}); err != nil {
		return nil, id, fmt.Errorf("cloudzero: storage directory %s: %w", dir, err)
	}
	return ext, id, nil
}

// handlerLogger passes warnings and errors to otel.Handle, one error per
// entry ("level: message {fields}"): an app using the SDK sees them where
// it sees the SDK's own errors. No entry holds the API key.
func handlerLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{MessageKey: "msg", LevelKey: "level", EncodeLevel: zapcore.LowercaseLevelEncoder})
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(handlerWriter{}), zapcore.WarnLevel))
}

type handlerWriter struct{}

func (handlerWriter) Write(p []byte) (int, error) {
	otel.Handle(errors.New("cloudzero: " + strings.TrimSpace(string(p))))
	return len(p), nil
}
