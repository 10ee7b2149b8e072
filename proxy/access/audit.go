package access

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc/authz/audit"

	"github.com/sextant/sextant/flow"
)

// AuditLoggerName is the audit logger gRPC servers' RBAC filters name:
// grpc-go takes the last segment of the TypedStruct's type URL.
const AuditLoggerName = "sextant.proxy.v1alpha1.AuditLogger"

func init() { audit.RegisterLoggerBuilder(auditBuilder{}) }

// AuditConfig is the logger's configuration inside the RBAC filter.
type AuditConfig struct {
	Sink     string   `json:"sink"`
	Server   string   `json:"server"`   // the xDS server's listening address
	Policies []string `json:"policies"` // the L7 policies on the server
}

type auditBuilder struct{}

type auditConfig struct {
	audit.LoggerConfig
	AuditConfig
}

func (auditBuilder) Name() string { return AuditLoggerName }

func (auditBuilder) ParseLoggerConfig(raw json.RawMessage) (audit.LoggerConfig, error) {
	var c AuditConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s config: %w", AuditLoggerName, err)
	}
	if c.Sink == "" {
		return nil, fmt.Errorf("%s config: no sink", AuditLoggerName)
	}
	return &auditConfig{AuditConfig: c}, nil
}

func (auditBuilder) Build(c audit.LoggerConfig) audit.Logger {
	cfg := c.(*auditConfig).AuditConfig
	server, _ := netip.ParseAddrPort(cfg.Server)
	return &auditLogger{cfg: cfg, server: server}
}

type auditLogger struct {
	cfg    AuditConfig
	server netip.AddrPort
}

// Log turns one RBAC decision into a record. grpc-go reports the policy
// that matched (MatchedRule, our policy names) for an allowed call and
// nothing for a call no policy allowed: that one is denied by the
// policies on the server, as Cilium reports a default deny.
func (l *auditLogger) Log(e *audit.Event) {
	sink := sinkFor(l.cfg.Sink)
	if sink == nil {
		return
	}
	r := Record{Flow: grpcFlow(e.FullMethodName, l.server), Decision: Decision{Source: "grpc-rbac"}}
	if e.Authorized {
		r.Decision.Verdict = VerdictForwarded
		if e.MatchedRule != "" {
			r.Decision.AllowedBy = []string{e.MatchedRule}
		}
	} else {
		r.Decision.Verdict = VerdictDropped
		r.Decision.DropReason = DropReasonPolicyDenied
		r.Decision.DeniedBy = clone(l.cfg.Policies)
		code := uint32(7) // PERMISSION_DENIED: what grpc-go answers a denied call
		r.Flow.GRPC.Status = &code
		r.Flow.GRPC.StatusSource = "trailers-only"
		r.Flow.Status = 200
	}
	sink(r)
}

// grpcFlow is the flow of a call to full method "/pkg.Service/Method" on
// a server, as far as a proxy knows it.
func grpcFlow(fullMethod string, server netip.AddrPort) flow.Flow {
	svc, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return flow.Flow{
		Time:        time.Now(),
		Observer:    flow.SideServer,
		Protocol:    "HTTP/2",
		Method:      "POST",
		Scheme:      "http",
		Path:        fullMethod,
		Destination: server,
		GRPC:        &flow.GRPC{Service: svc, Method: method},
	}
}
