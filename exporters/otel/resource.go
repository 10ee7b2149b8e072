package otel

import (
	"path"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/sextant/sextant/flow"
)

// service is the identity of an observed process: everything that goes into
// its OTel resource. Comparable, so it keys the resource and meter caches.
type service struct {
	node        string
	pid         uint32
	exe         string
	comm        string
	containerID string
	cgroup      string
}

func serviceOf(f *flow.Flow) service {
	return service{
		node:        f.Node,
		pid:         f.Process.PID,
		exe:         f.Process.Exe,
		comm:        f.Process.Comm,
		containerID: f.Process.ContainerID,
		cgroup:      f.Process.Cgroup,
	}
}

// serviceName is the flow's service (flow.Process.Service), or OTel's own
// placeholder when the flow names none.
func (s service) serviceName() string {
	if n := (flow.Process{ContainerID: s.containerID, Exe: s.exe, Comm: s.comm}).Service(); n != "" {
		return n
	}
	return "unknown_service"
}

func (s service) resource() *resource.Resource {
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, semconv.ServiceName(s.serviceName()))
	if s.pid != 0 {
		attrs = append(attrs, semconv.ProcessPID(int(s.pid)))
	}
	if s.exe != "" {
		attrs = append(attrs, semconv.ProcessExecutablePath(s.exe), semconv.ProcessExecutableName(path.Base(s.exe)))
	}
	if s.comm != "" {
		attrs = append(attrs, semconv.ProcessCommand(s.comm))
	}
	if s.containerID != "" {
		attrs = append(attrs, semconv.ContainerID(s.containerID))
	}
	if s.cgroup != "" {
		attrs = append(attrs, semconv.ProcessLinuxCgroup(s.cgroup))
	}
	if s.node != "" {
		attrs = append(attrs, semconv.HostName(s.node))
	}
	return resource.NewWithAttributes(semconv.SchemaURL, attrs...)
}

// resourceCache remembers the resources of recent services: building one
// sorts and dedups its attributes, which is most of a span's cost otherwise.
// Used by the worker goroutine only.
type resourceCache struct {
	m   map[service]*resource.Resource
	max int
}

func newResourceCache(max int) *resourceCache {
	return &resourceCache{m: make(map[service]*resource.Resource), max: max}
}

func (c *resourceCache) get(s service) *resource.Resource {
	if r, ok := c.m[s]; ok {
		return r
	}
	if len(c.m) >= c.max {
		// Forgetting everything is crude but bounded and cheap; live services
		// are back in the cache after one flow each.
		clear(c.m)
	}
	r := s.resource()
	c.m[s] = r
	return r
}
