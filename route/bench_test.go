package route

import "testing"

func BenchmarkRoute(b *testing.B) {
	r, _ := New([]string{"/api/users/{id}"}, 1000)
	paths := []string{"/api/users/alice", "/api/orders/12345/items/7c9e6679-7425-40de-944b-e07fc1f90ae7?x=1", "/healthz"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Route(paths[i%len(paths)])
	}
}
