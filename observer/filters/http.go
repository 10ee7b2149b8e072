package filters

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// messageTypeAccessLog is Cilium's event type of L7 events.
const messageTypeAccessLog = 129

var httpKind = kind{
	fields: []protoreflect.Name{"http_status_code", "http_method", "http_path", "http_url", "http_header"},
	build:  httpFilters,
}

func httpFilters(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	set := ff.GetHttpStatusCode() != nil || ff.GetHttpMethod() != nil || ff.GetHttpPath() != nil ||
		ff.GetHttpUrl() != nil || ff.GetHttpHeader() != nil
	if !set {
		return nil, nil
	}
	// As in Hubble: HTTP fields only exist on L7 events, so combining them
	// with an event type filter that excludes L7 can never match.
	if types := ff.GetEventType(); len(types) > 0 && !slices.ContainsFunc(types, func(t *flowpb.EventTypeFilter) bool {
		return t.GetType() == messageTypeAccessLog
	}) {
		return nil, errors.New("http filters require the event type filter to match l7 events")
	}
	var fs []FilterFunc
	if v := ff.GetHttpStatusCode(); v != nil {
		f, err := httpStatusCode(v)
		if err != nil {
			return nil, fmt.Errorf("http_status_code: %w", err)
		}
		fs = append(fs, f)
	}
	if v := ff.GetHttpMethod(); v != nil {
		fs = append(fs, httpMethod(v))
	}
	if v := ff.GetHttpPath(); v != nil {
		f, err := httpPath(v)
		if err != nil {
			return nil, fmt.Errorf("http_path: %w", err)
		}
		fs = append(fs, f)
	}
	if v := ff.GetHttpUrl(); v != nil {
		f, err := httpURL(v)
		if err != nil {
			return nil, fmt.Errorf("http_url: %w", err)
		}
		fs = append(fs, f)
	}
	if v := ff.GetHttpHeader(); v != nil {
		fs = append(fs, httpHeader(v))
	}
	return fs, nil
}

var (
	statusFull   = regexp.MustCompile(`^[1-5][0-9]{2}$`)
	statusPrefix = regexp.MustCompile(`^[1-5][0-9]?\+$`)
)

// httpStatusCode matches responses by full code ("404") or by prefix
// ("5+" = 500-599, "40+" = 400-409). Requests (code 0) never match.
func httpStatusCode(codes []string) (FilterFunc, error) {
	var full, prefix []string
	for _, c := range codes {
		switch {
		case statusFull.MatchString(c):
			full = append(full, c)
		case statusPrefix.MatchString(c):
			prefix = append(prefix, strings.TrimSuffix(c, "+"))
		default:
			return nil, fmt.Errorf("invalid status code %q (want e.g. 200, 5+ or 40+)", c)
		}
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || h.Code == 0 {
			return false
		}
		code := fmt.Sprintf("%03d", h.Code)
		return slices.Contains(full, code) || slices.ContainsFunc(prefix, func(p string) bool {
			return strings.HasPrefix(code, p)
		})
	}, nil
}

func httpMethod(methods []string) FilterFunc {
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || h.Method == "" {
			return false
		}
		return slices.ContainsFunc(methods, func(m string) bool { return strings.EqualFold(m, h.Method) })
	}
}

func compileAll(exprs []string) ([]*regexp.Regexp, error) {
	res := make([]*regexp.Regexp, 0, len(exprs))
	for _, e := range exprs {
		re, err := regexp.Compile(e)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", e, err)
		}
		res = append(res, re)
	}
	return res, nil
}

// httpPath matches the path of the URL (without query) against regular
// expressions, unanchored as in Hubble: "/api" matches "/v1/api/x"; anchor
// with "^/api" for a prefix.
func httpPath(exprs []string) (FilterFunc, error) {
	res, err := compileAll(exprs)
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || h.Url == "" {
			return false
		}
		u, err := url.ParseRequestURI(h.Url)
		if err != nil {
			return false
		}
		return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(u.Path) })
	}, nil
}

// httpURL matches the whole URL against regular expressions (unanchored).
func httpURL(exprs []string) (FilterFunc, error) {
	res, err := compileAll(exprs)
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || h.Url == "" {
			return false
		}
		return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(h.Url) })
	}, nil
}

// httpHeader matches when the event carries one of the given headers with
// exactly that value. Unlike Hubble, names compare case-insensitively: HTTP
// header names are, and HTTP/2 sends them in lower case.
func httpHeader(want []*flowpb.HTTPHeader) FilterFunc {
	return func(f *flowpb.Flow) bool {
		for _, h := range f.GetL7().GetHttp().GetHeaders() {
			if slices.ContainsFunc(want, func(w *flowpb.HTTPHeader) bool {
				return strings.EqualFold(w.GetKey(), h.GetKey()) && w.GetValue() == h.GetValue()
			}) {
				return true
			}
		}
		return false
	}
}
