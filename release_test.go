package cloudzeroexporter

import (
	"encoding/json"
	"os"
	"os/exec"
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

// makeVariable is the Makefile's NAME := v0.N.P.
func makeVariable(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("Makefile")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^` + name + ` := (v0\.\d+\.\d+)$`).FindSubmatch(b)
	require.NotNil(t, m, "Makefile: no %s := v0.N.P line", name)
	return string(m[1])
}

// stableRelease is the v1 release of the collector's stable modules that goes
// with release: the version of component that release's exporterhelper
// requires (`go mod download` reads it from the module proxy or the cache).
func stableRelease(t *testing.T, release string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", coreModules+"exporter/exporterhelper@"+release).Output()
	require.NoError(t, err, "go mod download exporterhelper@%s", release)
	var info struct{ GoMod string }
	require.NoError(t, json.Unmarshal(out, &info))
	b, err := os.ReadFile(info.GoMod)
	require.NoError(t, err)
	f, err := modfile.ParseLax(info.GoMod, b, nil)
	require.NoError(t, err)
	for _, r := range f.Require {
		if r.Mod.Path == coreModules+"component" {
			return r.Mod.Version
		}
	}
	t.Fatalf("exporterhelper@%s requires no collector/component", release)
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
// go.mod files and the distribution) is on the Makefile's COLLECTOR_RELEASE,
// and the scale-out first tier (deploy/loadbalancer) on LB_RELEASE, so that
// ocb, which checks major.minor of every component, builds each binary from
// one train.
func TestReleaseTrain(t *testing.T) {
	for _, train := range []struct {
		variable string
		gomods   []string
		manifest string
	}{
		{"COLLECTOR_RELEASE", []string{"go.mod", "bench/go.mod"}, "builder-config.yaml"},
		{"LB_RELEASE", nil, "deploy/loadbalancer/builder-config.yaml"},
	} {
		release := makeVariable(t, train.variable)
		stable := stableRelease(t, release)
		var off []string
		check := func(where, module, version string) {
			if why := onTrain(module, version, release, stable); why != "" {
				off = append(off, where+": "+module+" "+version+": "+why)
			}
		}
		for _, path := range train.gomods {
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
		for _, c := range distribution(t, train.manifest).components() {
			module, version, _ := strings.Cut(c.GoMod, " ")
			check(train.manifest, module, version)
		}
		require.Empty(t, off, "off the release train %s = %s / %s", train.variable, release, stable)
	}
}

// TestVersionsAgree: the module's Version, the distribution's version and the
// newest CHANGELOG entry are one number.
func TestVersionsAgree(t *testing.T) {
	require.Equal(t, czexporter.Version, distribution(t, "builder-config.yaml").Dist.Version, "builder-config.yaml dist.version")
	require.Equal(t, czexporter.Version, distribution(t, "deploy/loadbalancer/builder-config.yaml").Dist.Version, "deploy/loadbalancer/builder-config.yaml dist.version")
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

func distribution(t *testing.T, path string) builderConfig {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var c builderConfig
	require.NoError(t, yaml.Unmarshal(b, &c))
	require.NotEmpty(t, c.components())
	return c
}
