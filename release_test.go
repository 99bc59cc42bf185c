package cloudzeroexporter

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
)

const (
	coreModules    = "go.opentelemetry.io/collector/"
	contribModules = "github.com/open-telemetry/opentelemetry-collector-contrib/"
)

// collectorRelease is the Makefile's COLLECTOR_RELEASE (v0.165.0).
func collectorRelease(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("Makefile")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^COLLECTOR_RELEASE := (v0\.\d+\.\d+)$`).FindSubmatch(b)
	require.NotNil(t, m, "Makefile: no COLLECTOR_RELEASE := v0.N.P line")
	return string(m[1])
}

// stableRelease is the v1 release of the collector's stable modules that goes
// with release: the version of component that release's exporterhelper
// requires (read from the module cache, which the build filled).
func stableRelease(t *testing.T, release string) string {
	t.Helper()
	cache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	require.NoError(t, err)
	mod := filepath.Join(strings.TrimSpace(string(cache)), "cache/download/go.opentelemetry.io/collector/exporter/exporterhelper/@v", release+".mod")
	b, err := os.ReadFile(mod)
	require.NoError(t, err, "exporterhelper %s is not in the module cache: run go mod download", release)
	f, err := modfile.ParseLax(mod, b, nil)
	require.NoError(t, err)
	for _, r := range f.Require {
		if r.Mod.Path == coreModules+"component" {
			return r.Mod.Version
		}
	}
	t.Fatalf("%s requires no collector/component", mod)
	return ""
}

// onTrain says why version of module is off the release train, or "".
// Core v0 modules are the release itself, core v1 modules the stable release
// that goes with it; contrib modules share the release's minor (contrib
// ships patch releases of its own, e.g. v0.165.1).
func onTrain(module, version, release, stable string) string {
	switch {
	case strings.HasPrefix(module, contribModules):
		if semver.MajorMinor(version) != semver.MajorMinor(release) {
			return "contrib modules must be " + semver.MajorMinor(release) + ".x"
		}
	case strings.HasPrefix(module, coreModules) && semver.Major(version) == "v1":
		if version != stable {
			return "stable collector modules must be " + stable
		}
	case strings.HasPrefix(module, coreModules):
		if version != release {
			return "collector modules must be " + release
		}
	}
	return ""
}

// TestReleaseTrain: every collector module this repository builds with (both
// go.mod files and the distribution) is on the Makefile's release, so that
// ocb, which checks major.minor of every component, builds one train.
func TestReleaseTrain(t *testing.T) {
	release := collectorRelease(t)
	stable := stableRelease(t, release)
	var off []string
	check := func(where, module, version string) {
		if why := onTrain(module, version, release, stable); why != "" {
			off = append(off, where+": "+module+" "+version+": "+why)
		}
	}
	for _, path := range []string{"go.mod", "bench/go.mod"} {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		f, err := modfile.Parse(path, b, nil)
		require.NoError(t, err)
		for _, r := range f.Require {
			if !r.Indirect {
				check(path, r.Mod.Path, r.Mod.Version)
			}
		}
	}
	for _, c := range distribution(t).components() {
		module, version, _ := strings.Cut(c.GoMod, " ")
		check("builder-config.yaml", module, version)
	}
	require.Empty(t, off, "off the release train %s / %s", release, stable)
}

// TestVersionsAgree: the module's Version, the distribution's version and the
// newest CHANGELOG entry are one number.
func TestVersionsAgree(t *testing.T) {
	require.Equal(t, czexporter.Version, distribution(t).Dist.Version, "builder-config.yaml dist.version")
	b, err := os.ReadFile("CHANGELOG.md")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^## v?(\d+\.\d+\.\d+)`).FindSubmatch(b)
	require.NotNil(t, m, "CHANGELOG.md has no '## vX.Y.Z' entry")
	require.Equal(t, czexporter.Version, string(m[1]), "newest CHANGELOG.md entry")
}

type builderConfig struct {
	Dist struct {
		Version string `yaml:"version"`
	} `yaml:"dist"`
	Receivers  []builderComponent `yaml:"receivers"`
	Processors []builderComponent `yaml:"processors"`
	Exporters  []builderComponent `yaml:"exporters"`
	Extensions []builderComponent `yaml:"extensions"`
	Providers  []builderComponent `yaml:"providers"`
}

type builderComponent struct {
	GoMod string `yaml:"gomod"`
	Path  string `yaml:"path"`
}

func (c builderConfig) components() []builderComponent {
	var all []builderComponent
	for _, list := range [][]builderComponent{c.Receivers, c.Processors, c.Exporters, c.Extensions, c.Providers} {
		for _, comp := range list {
			if comp.Path == "" { // this repository's own module is on no train
				all = append(all, comp)
			}
		}
	}
	return all
}

func distribution(t *testing.T) builderConfig {
	t.Helper()
	b, err := os.ReadFile("builder-config.yaml")
	require.NoError(t, err)
	var c builderConfig
	require.NoError(t, yaml.Unmarshal(b, &c))
	require.NotEmpty(t, c.components())
	return c
}
