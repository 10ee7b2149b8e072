package probes

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
)

// Capture selects how the probes see socket traffic.
type Capture int

const (
	// CaptureAuto takes CaptureSocket when the kernel has the socket
	// tracepoints (Linux ≥ 6.3), CaptureSyscall otherwise.
	CaptureAuto Capture = iota
	// CaptureSocket hooks tp_btf/sock_send_length and sock_recv_length:
	// programs run only on socket I/O, per-socket state lives in the
	// socket's storage and tcp_destroy_sock ends a connection.
	CaptureSocket
	// CaptureSyscall hooks the raw sys_enter/sys_exit tracepoints: every
	// syscall of every process runs a program. The fallback for kernels
	// without the socket tracepoints.
	CaptureSyscall
)

func (c Capture) String() string {
	switch c {
	case CaptureAuto:
		return "auto"
	case CaptureSocket:
		return "socket"
	case CaptureSyscall:
		return "syscall"
	}
	return fmt.Sprintf("capture_%d", int(c))
}

// ParseCapture reads "auto", "socket" or "syscall" (a flag's value).
func ParseCapture(s string) (Capture, error) {
	for _, c := range []Capture{CaptureAuto, CaptureSocket, CaptureSyscall} {
		if s == c.String() {
			return c, nil
		}
	}
	return 0, fmt.Errorf("capture %q: want auto, socket or syscall", s)
}

// requirement is one kernel feature the probes need, with the kernel
// version that brought it (named in the error when it is missing).
type requirement struct {
	feature string
	kernel  string
	check   func(k *btf.Spec) error
}

// tracepoint: a BTF-typed tracepoint exists when its btf_trace_<name>
// typedef is in the kernel's BTF.
func tracepoint(name, kernel string) requirement {
	return requirement{
		feature: "tracepoint " + name,
		kernel:  kernel,
		check: func(k *btf.Spec) error {
			var td *btf.Typedef
			return k.TypeByName("btf_trace_"+name, &td)
		},
	}
}

func kfunc(name, kernel string) requirement {
	return requirement{
		feature: "kfunc " + name,
		kernel:  kernel,
		check: func(k *btf.Spec) error {
			var fn *btf.Func
			return k.TypeByName(name, &fn)
		},
	}
}

func helper(fn asm.BuiltinFunc, name, kernel string) requirement {
	return requirement{
		feature: "helper " + name,
		kernel:  kernel,
		// Any program type may call these helpers; the probe needs one
		// that cilium/ebpf knows how to load without an attach target.
		check: func(*btf.Spec) error { return features.HaveProgramHelper(ebpf.RawTracepoint, fn) },
	}
}

func mapType(mt ebpf.MapType, name, kernel string) requirement {
	return requirement{
		feature: name + " map",
		kernel:  kernel,
		check:   func(*btf.Spec) error { return features.HaveMapType(mt) },
	}
}

// Both paths share the walkers: ring buffer, bpf_loop, plain loads of
// kernel memory through bpf_rdonly_cast, tp_btf programs.
var common = []requirement{
	mapType(ebpf.RingBuf, "ring buffer", "5.8"),
	mapType(ebpf.LRUHash, "LRU hash", "4.10"),
	helper(asm.FnLoop, "bpf_loop", "5.17"),
	kfunc("bpf_rdonly_cast", "6.2"),
}

// socketTracepoints decide CaptureAuto.
var socketTracepoints = []requirement{
	tracepoint("sock_send_length", "6.3"),
	tracepoint("sock_recv_length", "6.3"),
	tracepoint("tcp_destroy_sock", "6.3 (socket capture)"),
}

var needs = map[Capture][]requirement{
	CaptureSocket: append(append([]requirement{
		mapType(ebpf.SkStorage, "socket storage (from tracing programs)", "5.11"),
		helper(asm.FnTaskPtRegs, "bpf_task_pt_regs", "5.15"),
	}, socketTracepoints...), common...),
	CaptureSyscall: append([]requirement{
		mapType(ebpf.TaskStorage, "task storage", "5.11"),
		tracepoint("sys_enter", "5.5"),
		tracepoint("sys_exit", "5.5"),
		tracepoint("sched_process_exit", "5.5"),
	}, common...),
}

// scopeNeeds are what Options.Cgroup needs on either path.
var scopeNeeds = []requirement{
	mapType(ebpf.CGroupArray, "cgroup array", "4.8"),
	helper(asm.FnCurrentTaskUnderCgroup, "bpf_current_task_under_cgroup", "4.9"),
}

// ErrMissingFeature is wrapped by Load's error when the kernel lacks
// something the chosen capture needs.
var ErrMissingFeature = errors.New("kernel lacks a feature the probes need")

var kernelBTF = sync.OnceValues(btf.LoadKernelSpec)

// chooseCapture resolves CaptureAuto and checks, before anything is
// loaded, that the kernel has every feature the capture needs. The error
// names each missing feature and the kernel version that brought it.
func chooseCapture(want Capture, scoped bool) (Capture, error) {
	k, err := kernelBTF()
	if err != nil {
		return want, fmt.Errorf("%w: kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF, Linux ≥ 5.5): %v",
			ErrMissingFeature, err)
	}
	if want == CaptureAuto {
		want = CaptureSocket
		if missing(k, socketTracepoints) != nil {
			want = CaptureSyscall
		}
	}
	reqs, ok := needs[want]
	if !ok {
		return want, fmt.Errorf("capture %s: unknown", want)
	}
	if scoped {
		reqs = append(reqs[:len(reqs):len(reqs)], scopeNeeds...)
	}
	if err := missing(k, reqs); err != nil {
		return want, fmt.Errorf("%w for %s capture: %v", ErrMissingFeature, want, err)
	}
	return want, nil
}

// missing lists the requirements the kernel does not meet.
func missing(k *btf.Spec, reqs []requirement) error {
	var out []string
	for _, r := range reqs {
		err := r.check(k)
		switch {
		case err == nil:
		case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, btf.ErrNotFound):
			out = append(out, fmt.Sprintf("%s (Linux ≥ %s)", r.feature, r.kernel))
		default:
			out = append(out, fmt.Sprintf("%s (Linux ≥ %s): probe failed: %v", r.feature, r.kernel, err))
		}
	}
	if len(out) == 0 {
		return nil
	}
	return errors.New(strings.Join(out, ", "))
}
