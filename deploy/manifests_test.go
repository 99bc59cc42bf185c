package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
)

// manifests is every object of the deploy/kubernetes files, decoded strictly.
type manifests struct {
	configMaps   map[string]*corev1.ConfigMap
	services     map[string]*corev1.Service
	statefulSets map[string]*appsv1.StatefulSet
	deployments  map[string]*appsv1.Deployment
}

// strictUnmarshal decodes YAML into v as the API server's strict field
// validation does (`kubectl apply --validate=strict`): field names are
// case-sensitive, and unknown or duplicate fields are errors.
func strictUnmarshal(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func decodeStrict(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	require.NoError(t, strictUnmarshal(doc, v), where)
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	m := manifests{map[string]*corev1.ConfigMap{}, map[string]*corev1.Service{}, map[string]*appsv1.StatefulSet{}, map[string]*appsv1.Deployment{}}
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			where := fmt.Sprintf("%s, document %d", f, i+1)
			var tm metav1.TypeMeta
			require.NoError(t, yaml.Unmarshal([]byte(doc), &tm), where)
			var name string
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 ConfigMap":
				o := &corev1.ConfigMap{}
				decodeStrict(t, where, []byte(doc), o)
				name, m.configMaps[o.Name] = o.Name, o
			case "v1 Service":
				o := &corev1.Service{}
				decodeStrict(t, where, []byte(doc), o)
				name, m.services[o.Name] = o.Name, o
			case "apps/v1 StatefulSet":
				o := &appsv1.StatefulSet{}
				decodeStrict(t, where, []byte(doc), o)
				name, m.statefulSets[o.Name] = o.Name, o
			case "apps/v1 Deployment":
				o := &appsv1.Deployment{}
				decodeStrict(t, where, []byte(doc), o)
				name, m.deployments[o.Name] = o.Name, o
			default:
				t.Fatalf("%s: unexpected %s %s", where, tm.APIVersion, tm.Kind)
			}
			require.NotEmpty(t, name, "%s: metadata.name", where)
		}
	}
	return m
}

// TestStrictDecodingRefusesUnknownFields: the decoder the manifest tests use
// does catch a misspelt field (the tests below would pass vacuously otherwise).
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIp: None}\n",
		"duplicate field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nmetadata: {name: y}\n",
		"wrong case":      "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIp: None}\n",
		"misspelt":        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIPs: [None], selectr: {}}\n",
	} {
		assert.Error(t, strictUnmarshal([]byte(doc), &corev1.Service{}), name)
	}
}

// collectorConfig is a collector config file as a generic tree.
type collectorConfig map[string]any

func readCollectorConfig(t *testing.T, text string) collectorConfig {
	t.Helper()
	var c collectorConfig
	require.NoError(t, strictUnmarshal([]byte(text), &c))
	return c
}

// get follows a path of map keys ("exporters", "cloudzero", "storage").
func (c collectorConfig) get(path ...string) any {
	var v any = map[string]any(c)
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

var envRef = regexp.MustCompile(`\$\{env:([A-Z0-9_]+)(?::-([^}]*))?\}`)

// inPod is s as a pod sees it: ${env:X:-default} gives the default unless the
// pod's env sets X; ${env:X} of a variable the pod sets stays a reference.
func inPod(s string, podEnv map[string]bool) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := envRef.FindStringSubmatch(ref)
		if podEnv[m[1]] || !strings.Contains(ref, ":-") {
			return ref
		}
		return m[2]
	})
}

// expandTree applies inPod to every string of a config tree.
func expandTree(v any, podEnv map[string]bool) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = expandTree(e, podEnv)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = expandTree(e, podEnv)
		}
		return out
	case string:
		return inPod(v, podEnv)
	}
	return v
}

func envNames(c corev1.Container) map[string]bool {
	names := map[string]bool{}
	for _, e := range c.Env {
		names[e.Name] = true
	}
	return names
}

// port is the port of a host:port endpoint whose host may be ${env:...}.
func port(t *testing.T, endpoint string) int32 {
	t.Helper()
	i := strings.LastIndexByte(endpoint, ':')
	require.Positive(t, i, endpoint)
	n, err := strconv.Atoi(endpoint[i+1:])
	require.NoError(t, err, endpoint)
	return int32(n)
}

// shutdownBudget is how long the cloudzero exporter's shutdown may take with
// the config c: its shutdown_timeout, or the shipped default.
func shutdownBudget(t *testing.T, c collectorConfig) time.Duration {
	t.Helper()
	s, ok := c.get("exporters", "cloudzero", "shutdown_timeout").(string)
	if !ok {
		return czexporter.DefaultShutdownTimeout
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err)
	return d
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// checkContainer holds the invariants every collector container shares:
// non-root, read-only root, probes on health_check, resources, the config
// mounted where --config reads it, the pod IP for the receivers.
func checkContainer(t *testing.T, name string, pod corev1.PodSpec, cfg collectorConfig) {
	t.Helper()
	require.Len(t, pod.Containers, 1, name)
	c := pod.Containers[0]
	podEnv := envNames(c)

	assert.Truef(t, pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot, "%s: runAsNonRoot", name)
	sc := c.SecurityContext
	require.NotNil(t, sc, name)
	assert.Truef(t, sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", name)
	assert.Truef(t, sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation false", name)
	assert.Containsf(t, sc.Capabilities.Drop, corev1.Capability("ALL"), "%s: capabilities dropped", name)

	assert.Truef(t, strings.HasSuffix(c.Image, ":"+czexporter.Version), "%s: image %s is not version %s", name, c.Image, czexporter.Version)

	health, ok := cfg.get("extensions", "health_check", "endpoint").(string)
	require.Truef(t, ok, "%s: no health_check endpoint", name)
	healthPort := port(t, inPod(health, podEnv))
	healthPath, _ := cfg.get("extensions", "health_check", "path").(string)
	if healthPath == "" {
		healthPath = "/" // health_check's default
	}
	for probe, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p == nil && probe == "startup" {
			continue
		}
		require.NotNilf(t, p, "%s: %s probe", name, probe)
		require.NotNilf(t, p.HTTPGet, "%s: %s probe is not httpGet", name, probe)
		assert.Equalf(t, healthPort, p.HTTPGet.Port.IntVal, "%s: %s probe port vs health_check's", name, probe)
		assert.Equalf(t, healthPath, p.HTTPGet.Path, "%s: %s probe path vs health_check's", name, probe)
	}
	assert.Contains(t, cfg.get("service", "extensions"), "health_check", name)

	assert.Falsef(t, c.Resources.Requests.Cpu().IsZero(), "%s: cpu request", name)
	assert.Falsef(t, c.Resources.Requests.Memory().IsZero(), "%s: memory request", name)
	limit := c.Resources.Limits.Memory()
	require.Falsef(t, limit.IsZero(), "%s: memory limit", name)
	// GOMEMLIMIT and the memory_limiter at 80 % of the limit: the Go runtime
	// collects harder, and the collector refuses data, before the kernel kills.
	assert.EqualValuesf(t, 80, cfg.get("processors", "memory_limiter", "limit_percentage"), "%s: memory_limiter", name)
	var gomemlimit bool
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			gomemlimit = true
			q, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
			require.NoError(t, err, e.Value)
			want := limit.Value() * 80 / 100
			assert.InDeltaf(t, want, q.Value(), 1<<20, "%s: GOMEMLIMIT %s is not 80 %% of the limit %s", name, e.Value, limit)
		}
		if e.Name == "MY_POD_IP" {
			require.NotNil(t, e.ValueFrom)
			assert.Equal(t, "status.podIP", e.ValueFrom.FieldRef.FieldPath, name)
		}
	}
	assert.Truef(t, gomemlimit, "%s: GOMEMLIMIT is set", name)
	assert.Truef(t, podEnv["MY_POD_IP"], "%s: the receivers listen on ${env:MY_POD_IP}", name)

	// The receivers listen on the container's declared ports.
	for proto, portName := range map[string]string{"grpc": "otlp-grpc", "http": "otlp-http"} {
		endpoint, ok := cfg.get("receivers", "otlp", "protocols", proto, "endpoint").(string)
		require.Truef(t, ok, "%s: otlp %s receiver", name, proto)
		assert.Equalf(t, port(t, inPod(endpoint, podEnv)), containerPort(t, c, portName), "%s: otlp %s receiver vs containerPort %s", name, proto, portName)
	}

}

// containerPort is the number of c's port called name.
func containerPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return 0
}

// configFiles are the collector config files the pod runs, in --config
// order, read from the ConfigMap mounted where the args point.
func configFiles(t *testing.T, m manifests, pod corev1.PodSpec) []string {
	t.Helper()
	c := pod.Containers[0]
	var files []string
	for _, arg := range c.Args {
		path, ok := strings.CutPrefix(arg, "--config=")
		if !ok {
			continue
		}
		i := slices.IndexFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == filepath.Dir(path) })
		require.GreaterOrEqualf(t, i, 0, "nothing is mounted at %s", filepath.Dir(path))
		vm := c.VolumeMounts[i]
		assert.True(t, vm.ReadOnly, "%s is mounted read-only", vm.MountPath)
		j := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		require.GreaterOrEqualf(t, j, 0, "no volume %q", vm.Name)
		require.NotNil(t, pod.Volumes[j].ConfigMap, "volume %q is a ConfigMap", vm.Name)
		cm := m.configMaps[pod.Volumes[j].ConfigMap.Name]
		require.NotNilf(t, cm, "ConfigMap %q", pod.Volumes[j].ConfigMap.Name)
		text, ok := cm.Data[filepath.Base(path)]
		require.Truef(t, ok, "ConfigMap %s has no %s (the file --config names)", cm.Name, filepath.Base(path))
		files = append(files, text)
	}
	require.NotEmpty(t, files, "the container runs no --config")
	return files
}

// checkService: the Service selects the pods and each targetPort names one
// of their container ports.
func checkService(t *testing.T, svc *corev1.Service, tmpl corev1.PodTemplateSpec) {
	t.Helper()
	for k, v := range svc.Spec.Selector {
		assert.Equalf(t, v, tmpl.Labels[k], "Service %s selector %s", svc.Name, k)
	}
	c := tmpl.Spec.Containers[0]
	for _, p := range svc.Spec.Ports {
		require.NotEmptyf(t, p.TargetPort.StrVal, "Service %s port %s: a named targetPort", svc.Name, p.Name)
		assert.Equalf(t, p.Port, containerPort(t, c, p.TargetPort.StrVal), "Service %s port %s: the same number as the container's", svc.Name, p.Name)
	}
}

// secretCommand is the README's `kubectl create secret` line for the key.
var secretCommand = regexp.MustCompile(`create secret generic (\S+) --from-file=([^=\s]+)=`)

func checkSecretMatchesReadme(t *testing.T, ref *corev1.SecretKeySelector) {
	t.Helper()
	readme := readFile(t, filepath.Join("..", "README.md"))
	cmds := secretCommand.FindAllStringSubmatch(readme, -1)
	require.NotEmpty(t, cmds, "the README says how to create the Secret")
	for _, c := range cmds {
		assert.Equal(t, ref.Name, c[1], "the README's Secret name")
		assert.Equal(t, ref.Key, c[2], "the README's Secret key")
	}
}

func TestGatewayStatefulSet(t *testing.T) {
	m := loadManifests(t)
	sts := m.statefulSets["otelcol-cloudzero-gateway"]
	require.NotNil(t, sts)
	pod := sts.Spec.Template.Spec
	c := pod.Containers[0]

	files := configFiles(t, m, pod)
	require.Len(t, files, 1)
	text := files[0]
	assert.Equal(t, readFile(t, filepath.Join("config", "gateway.yaml")), text, "the pod runs deploy/config/gateway.yaml as tested end to end")
	cfg := readCollectorConfig(t, text)
	checkContainer(t, "gateway", pod, cfg)

	// The API key comes from a Secret, never a literal.
	assert.Equal(t, "${env:CLOUDZERO_API_KEY}", cfg.get("exporters", "cloudzero", "api_key"))
	for _, e := range c.Env {
		if e.Name == "CLOUDZERO_API_KEY" {
			assert.Empty(t, e.Value, "the key is not in the manifest")
			require.NotNil(t, e.ValueFrom)
			require.NotNil(t, e.ValueFrom.SecretKeyRef, "CLOUDZERO_API_KEY from a Secret")
			checkSecretMatchesReadme(t, e.ValueFrom.SecretKeyRef)
		}
	}
	assert.True(t, envNames(c)["CLOUDZERO_API_KEY"])

	// The ledger lives on the pod's own volume.
	assert.Equal(t, "file_storage", cfg.get("exporters", "cloudzero", "storage"))
	dir := inPod(cfg.get("extensions", "file_storage", "directory").(string), envNames(c))
	require.Len(t, sts.Spec.VolumeClaimTemplates, 1)
	claim := sts.Spec.VolumeClaimTemplates[0]
	assert.True(t, slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
		return vm.Name == claim.Name && vm.MountPath == dir && !vm.ReadOnly
	}), "the claim %q is mounted at file_storage's directory %s", claim.Name, dir)
	assert.False(t, claim.Spec.Resources.Requests.Storage().IsZero())
	assert.NotNil(t, pod.SecurityContext.FSGroup, "fsGroup makes the volume writable by the non-root user")

	// SIGKILL must not cut the exporter's last flush short.
	budget := shutdownBudget(t, cfg)
	require.NotNil(t, pod.TerminationGracePeriodSeconds)
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	assert.Greaterf(t, grace, budget+10*time.Second, "terminationGracePeriodSeconds %s vs the exporter's shutdown budget %s", grace, budget)

	// Stable pod names: a headless Service that keeps restarting pods listed.
	svc := m.services[sts.Spec.ServiceName]
	require.NotNil(t, svc, "the StatefulSet's serviceName")
	assert.Equal(t, corev1.ClusterIPNone, svc.Spec.ClusterIP)
	assert.True(t, svc.Spec.PublishNotReadyAddresses)
	checkService(t, svc, sts.Spec.Template)
}

// gatewayHostnames are the first tier's targets the StatefulSet provides:
// each pod's stable name and the port its OTLP gRPC receiver listens on.
func gatewayHostnames(t *testing.T, sts *appsv1.StatefulSet, svc *corev1.Service, gw collectorConfig) []string {
	t.Helper()
	require.NotNil(t, sts.Spec.Replicas)
	endpoint := gw.get("receivers", "otlp", "protocols", "grpc", "endpoint").(string)
	grpc := port(t, inPod(endpoint, envNames(sts.Spec.Template.Spec.Containers[0])))
	var hosts []string
	for i := range *sts.Spec.Replicas {
		hosts = append(hosts, fmt.Sprintf("%s-%d.%s:%d", sts.Name, i, svc.Name, grpc))
	}
	return hosts
}

// elementAttributes are the element_name attributes of the gateway's streams.
func elementAttributes(t *testing.T, cfg collectorConfig) []string {
	t.Helper()
	streams, ok := cfg.get("exporters", "cloudzero", "streams").([]any)
	require.True(t, ok)
	var attrs []string
	for _, s := range streams {
		a := s.(map[string]any)["element_name"].(string)
		if !slices.Contains(attrs, a) {
			attrs = append(attrs, a)
		}
	}
	return attrs
}

func TestLoadBalancerDeployment(t *testing.T) {
	m := loadManifests(t)
	d := m.deployments["otelcol-cloudzero-lb"]
	require.NotNil(t, d)
	pod := d.Spec.Template.Spec
	files := configFiles(t, m, pod)
	require.Len(t, files, 1, "the first tier runs loadbalancer.yaml (replace routing)")
	assert.Equal(t, readFile(t, filepath.Join("config", "loadbalancer.yaml")), files[0], "the pod runs deploy/config/loadbalancer.yaml as tested end to end")
	cm := m.configMaps[pod.Volumes[0].ConfigMap.Name]
	require.NotNil(t, cm)
	assert.Equal(t, readFile(t, filepath.Join("config", "loadbalancer-sum.yaml")), cm.Data["loadbalancer-sum.yaml"], "the sum overlay as tested end to end")
	cfg := readCollectorConfig(t, files[0])
	checkContainer(t, "first tier", pod, cfg)
	podEnv := envNames(pod.Containers[0])

	// The static list is exactly the gateway StatefulSet's pods.
	sts := m.statefulSets["otelcol-cloudzero-gateway"]
	require.NotNil(t, sts)
	gw := readCollectorConfig(t, readFile(t, filepath.Join("config", "gateway.yaml")))
	hosts := expandTree(cfg.get("exporters", "loadbalancing", "resolver", "static", "hostnames"), podEnv)
	assert.Equal(t, toAny(gatewayHostnames(t, sts, m.services[sts.Spec.ServiceName], gw)), hosts)

	// replace needs one writer per record key: route by the element attribute.
	assert.Equal(t, "attributes", cfg.get("exporters", "loadbalancing", "routing_key"))
	assert.ElementsMatch(t, toAny(elementAttributes(t, gw)), cfg.get("exporters", "loadbalancing", "routing_attributes"))
	sum := readCollectorConfig(t, cm.Data["loadbalancer-sum.yaml"])
	assert.Equal(t, "streamID", sum.get("exporters", "loadbalancing", "routing_key"))

	// A restarting gateway is waited for, not given up on.
	assert.EqualValues(t, 0, cfg.get("exporters", "loadbalancing", "protocol", "otlp", "retry_on_failure", "max_elapsed_time"))

	svc := m.services["otelcol-cloudzero"]
	require.NotNil(t, svc, "the Service the apps send to")
	checkService(t, svc, d.Spec.Template)
	require.NotNil(t, pod.TerminationGracePeriodSeconds)
	assert.GreaterOrEqual(t, *pod.TerminationGracePeriodSeconds, int64(30), "time for the in-memory queue to drain to the gateways")
}

func toAny[T any](s []T) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// chartValues is the part of the opentelemetry-collector chart's values
// these files set, decoded strictly: a key the chart does not read (a typo)
// fails here. Kubernetes-typed values decode into the API types.
type chartValues struct {
	Mode             string `json:"mode"`
	ReplicaCount     int32  `json:"replicaCount"`
	FullnameOverride string `json:"fullnameOverride"`
	Image            struct {
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	} `json:"image"`
	Command struct {
		Name string `json:"name"`
	} `json:"command"`
	ExtraEnvs                     []corev1.EnvVar             `json:"extraEnvs"`
	TerminationGracePeriodSeconds int64                       `json:"terminationGracePeriodSeconds"`
	PodSecurityContext            corev1.PodSecurityContext   `json:"podSecurityContext"`
	SecurityContext               corev1.SecurityContext      `json:"securityContext"`
	Resources                     corev1.ResourceRequirements `json:"resources"`
	Service                       *struct {
		ClusterIP string `json:"clusterIP"`
	} `json:"service"`
	Statefulset *struct {
		VolumeClaimTemplates []corev1.PersistentVolumeClaim `json:"volumeClaimTemplates"`
	} `json:"statefulset"`
	ExtraVolumeMounts []corev1.VolumeMount `json:"extraVolumeMounts"`
	Ports             map[string]struct {
		Enabled bool `json:"enabled"`
	} `json:"ports"`
	Config map[string]any `json:"config"`
}

func readValues(t *testing.T, file string) (chartValues, collectorConfig) {
	t.Helper()
	b := []byte(readFile(t, filepath.Join("helm", file)))
	var v chartValues
	decodeStrict(t, file, b, &v)
	return v, collectorConfig(v.Config)
}

// chartDefaultsRemoved: what the chart's default config and ports hold that
// these distributions do not have.
func checkChartDefaultsRemoved(t *testing.T, file string, v chartValues, cfg collectorConfig) {
	t.Helper()
	for _, path := range [][]string{
		{"receivers", "jaeger"}, {"receivers", "prometheus"}, {"receivers", "zipkin"},
		{"processors", "batch"}, {"exporters", "debug"},
		{"service", "pipelines", "logs"}, {"service", "pipelines", "traces"},
	} {
		parent, _ := cfg.get(path[:len(path)-1]...).(map[string]any)
		v, ok := parent[path[len(path)-1]]
		assert.Truef(t, ok && v == nil, "%s: config.%s must be null (the chart's default; not in the distribution)", file, strings.Join(path, "."))
	}
	for _, p := range []string{"jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin"} {
		assert.Falsef(t, v.Ports[p].Enabled, "%s: port %s", file, p)
	}
	assert.Equal(t, "otelcol", v.Command.Name, "%s: the image's binary is /otelcol", file)
	assert.Equal(t, czexporter.Version, v.Image.Tag, file)
	assert.True(t, *v.PodSecurityContext.RunAsNonRoot, file)
	assert.True(t, *v.SecurityContext.ReadOnlyRootFilesystem, file)
	assert.False(t, v.Resources.Limits.Memory().IsZero(), "%s: a memory limit (the chart's GOMEMLIMIT is 80 %% of it)", file)
}

func TestHelmValuesGateway(t *testing.T) {
	v, cfg := readValues(t, "values-gateway.yaml")
	checkChartDefaultsRemoved(t, "values-gateway.yaml", v, cfg)
	m := loadManifests(t)
	sts := m.statefulSets["otelcol-cloudzero-gateway"]
	require.NotNil(t, sts)

	assert.Equal(t, "statefulset", v.Mode)
	assert.Equal(t, sts.Name, v.FullnameOverride, "the first tier's static list names these pods")
	assert.Equal(t, *sts.Spec.Replicas, v.ReplicaCount)
	require.NotNil(t, v.Service)
	assert.Equal(t, "None", v.Service.ClusterIP)

	// The same exporter, storage and pipeline as the tested gateway config.
	gw := readCollectorConfig(t, readFile(t, filepath.Join("config", "gateway.yaml")))
	pod := envNames(corev1.Container{Env: v.ExtraEnvs})
	pod["MY_POD_IP"] = true // the chart sets it
	for _, path := range [][]string{
		{"exporters", "cloudzero"}, {"extensions", "file_storage"}, {"processors", "memory_limiter"},
		{"service", "pipelines", "metrics"},
	} {
		assert.Equalf(t, expandTree(gw.get(path...), pod), cfg.get(path...), "values-gateway.yaml config.%s vs deploy/config/gateway.yaml", strings.Join(path, "."))
	}
	assert.Equal(t, []any{"health_check", "file_storage"}, cfg.get("service", "extensions"))

	var keyFromSecret bool
	for _, e := range v.ExtraEnvs {
		keyFromSecret = keyFromSecret || (e.Name == "CLOUDZERO_API_KEY" && e.Value == "" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil)
	}
	assert.True(t, keyFromSecret, "CLOUDZERO_API_KEY from a Secret")

	require.NotNil(t, v.Statefulset)
	require.Len(t, v.Statefulset.VolumeClaimTemplates, 1)
	claim := v.Statefulset.VolumeClaimTemplates[0].Name
	dir := cfg.get("extensions", "file_storage", "directory")
	assert.True(t, slices.ContainsFunc(v.ExtraVolumeMounts, func(vm corev1.VolumeMount) bool {
		return vm.Name == claim && vm.MountPath == dir
	}), "the claim %q is mounted at %v", claim, dir)
	assert.NotNil(t, v.PodSecurityContext.FSGroup)
	assert.Greater(t, time.Duration(v.TerminationGracePeriodSeconds)*time.Second, shutdownBudget(t, cfg)+10*time.Second)
}

func TestHelmValuesLoadBalancer(t *testing.T) {
	v, cfg := readValues(t, "values-loadbalancer.yaml")
	checkChartDefaultsRemoved(t, "values-loadbalancer.yaml", v, cfg)
	m := loadManifests(t)
	assert.Equal(t, "deployment", v.Mode)
	assert.Contains(t, m.services, v.FullnameOverride, "the apps' Service name, as in the manifests")

	lb := readCollectorConfig(t, readFile(t, filepath.Join("config", "loadbalancer.yaml")))
	for _, path := range [][]string{{"exporters", "loadbalancing"}, {"processors", "memory_limiter"}, {"service", "pipelines", "metrics"}} {
		assert.Equalf(t, expandTree(lb.get(path...), map[string]bool{"MY_POD_IP": true}), cfg.get(path...),
			"values-loadbalancer.yaml config.%s vs deploy/config/loadbalancer.yaml", strings.Join(path, "."))
	}
}

// TestDockerfile: multi-stage, a static binary (CGO off) on distroless
// static as a numeric non-root user (no shell), ocb at the release train's
// version, and the binary where the manifests and the chart run it.
func TestDockerfile(t *testing.T) {
	df := readFile(t, "Dockerfile")
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	require.Len(t, froms, 2, "a build stage and a runtime stage")
	assert.Regexp(t, `^gcr\.io/distroless/static-debian\d+:nonroot$`, froms[1][1], "runtime image: distroless static, non-root, no shell")
	assert.Regexp(t, `(?m)^ENV CGO_ENABLED=0`, df)
	assert.Regexp(t, `(?m)^USER 65532:65532$`, df)
	assert.Regexp(t, `(?m)^ENTRYPOINT \["/otelcol"\]$`, df)

	makefile := readFile(t, filepath.Join("..", "Makefile"))
	release := regexp.MustCompile(`(?m)^COLLECTOR_RELEASE := (\S+)$`).FindStringSubmatch(makefile)
	require.NotNil(t, release)
	assert.Contains(t, df, "ARG OCB_VERSION="+release[1], "the Dockerfile's ocb is the Makefile's release")
	lbRelease := regexp.MustCompile(`(?m)^LB_RELEASE := (\S+)$`).FindStringSubmatch(makefile)
	require.NotNil(t, lbRelease)
	assert.Contains(t, df, "--build-arg OCB_VERSION="+lbRelease[1], "the first tier's build line names its release")

	for _, f := range []string{"kubernetes/gateway.yaml", "kubernetes/loadbalancer.yaml"} {
		assert.NotContains(t, readFile(t, f), "command:", "%s: the image's ENTRYPOINT runs /otelcol", f)
	}
	assert.True(t, bytes.Contains([]byte(readFile(t, filepath.Join("..", ".dockerignore"))), []byte("_build")), ".dockerignore keeps _build out of the context")
}
