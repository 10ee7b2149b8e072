package route

import "testing"

func TestRouteCollapsing(t *testing.T) {
	r, err := New(nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"", ""},
		{"/", "/"},
		{"/healthz", "/healthz"},
		{"/api/users/123", "/api/users/{id}"},
		{"/api/users/123/orders/9?expand=items#top", "/api/users/{id}/orders/{id}"},
		{"/api/v2/users", "/api/v2/users"}, // v2 is not an id
		{"/o/7c9e6679-7425-40de-944b-e07fc1f90ae7", "/o/{uuid}"},
		{"/o/7C9E6679-7425-40DE-944B-E07FC1F90AE7/x", "/o/{uuid}/x"},
		{"/blob/3f786850e387550fdab836ed7e6dc881de23001b", "/blob/{hash}"},
		{"/blob/deadbeefdeadbeef", "/blob/{hash}"}, // 16 hex digits
		{"/blob/deadbeef", "/blob/deadbeef"},       // 8: too short for a hash
		{"/reset/eyJhbGciOiJIUzI1NiJ9eyJzdWIiOiIxMjM0NTY3ODkwIn0", "/reset/{token}"},
		{"/reset/aGVsbG8gd29ybGQgdGhpcyBpcw==", "/reset/{token}"},
		{"/docs/getting-started-with-the-platform", "/docs/getting-started-with-the-platform"}, // a slug, no digits
		{"/preferences/notifications", "/preferences/notifications"},
		{"/a//b/", "/a//b/"},
		{"?only=query", ""},
		{"/files/42/", "/files/{id}/"},
	} {
		if got := r.Route(c.path); got != c.want {
			t.Errorf("Route(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}

func TestRoutePatterns(t *testing.T) {
	r, err := New([]string{
		"/api/users/{id}",
		"/api/users/{id}/orders/{order}",
		"/static/{path...}",
		"/api/users/me", // shadowed by /api/users/{id}: first match wins
	}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"/api/users/alice", "/api/users/{id}"},
		{"/api/users/me", "/api/users/{id}"},
		{"/api/users/alice/orders/A-17?x=1", "/api/users/{id}/orders/{order}"},
		{"/api/users/alice/orders", "/api/users/alice/orders"}, // no pattern: collapsing (nothing to collapse)
		{"/api/users/", "/api/users/"},                         // {id} needs a non-empty segment
		{"/api/users/alice/", "/api/users/alice/"},
		{"/static/css/site.css", "/static/{path...}"},
		{"/static/", "/static/"}, // {path...} needs at least one character
		{"/static", "/static"},
		{"/api/users/42/orders/7/extra", "/api/users/{id}/orders/{id}/extra"},
	} {
		if got := r.Route(c.path); got != c.want {
			t.Errorf("Route(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}

func TestRoutePatternErrors(t *testing.T) {
	for _, p := range []string{"api/x", "/a/{rest...}/b", "/a/x{id}", "/a?b=1"} {
		if _, err := New([]string{p}, 10); err == nil {
			t.Errorf("New(%q): no error", p)
		}
	}
}

// TestRouteNoAllocs: routing a path with nothing to collapse, or one whose
// template was built before, allocates nothing (it runs once per flow).
func TestRouteNoAllocs(t *testing.T) {
	r, _ := New([]string{"/api/users/{id}"}, 100)
	r.Route("/items/1") // builds and interns /items/{id}
	for _, p := range []string{"/api/users/7", "/healthz?verbose=1", "/items/99999"} {
		if n := testing.AllocsPerRun(100, func() { r.Route(p) }); n != 0 {
			t.Errorf("Route(%q): %v allocations per call, want 0", p, n)
		}
	}
}

// TestRouteInternBounded: hostile paths cannot grow the interned
// templates beyond their bound; routes stay correct past it.
func TestRouteInternBounded(t *testing.T) {
	r, _ := New(nil, 3)
	for _, p := range []string{"/a/1", "/b/1", "/c/1", "/d/1", "/e/1"} {
		r.Route(p)
	}
	if len(r.intern) != 3 {
		t.Fatalf("interned %d templates, want the bound 3", len(r.intern))
	}
	if got := r.Route("/e/2"); got != "/e/{id}" {
		t.Fatalf("past the bound: Route = %q", got)
	}
}
