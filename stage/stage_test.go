package stage

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder notes what each stage did, in order.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) note(s string) {
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
}

func (r *recorder) stage(name string, startErr, runErr error) Stage {
	return Stage{
		Name:  name,
		Start: func(context.Context) error { r.note("start " + name); return startErr },
		Run: func(ctx context.Context) error {
			if runErr != nil {
				return runErr
			}
			<-ctx.Done()
			r.note("run-end " + name)
			return nil
		},
		Stop: func(context.Context) error { r.note("stop " + name); return nil },
	}
}

func TestOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stages  func(r *recorder) []Stage
		cancel  bool
		want    []string
		wantErr string
	}{
		{
			name: "start in order, stop in reverse after each Run ends",
			stages: func(r *recorder) []Stage {
				return []Stage{r.stage("a", nil, nil), r.stage("b", nil, nil), r.stage("c", nil, nil)}
			},
			cancel: true,
			want: []string{"start a", "start b", "start c", "ready",
				"run-end c", "stop c", "run-end b", "stop b", "run-end a", "stop a"},
		},
		{
			name: "a failed start stops what started, never starts the rest",
			stages: func(r *recorder) []Stage {
				return []Stage{r.stage("a", nil, nil), r.stage("b", errors.New("port taken"), nil), r.stage("c", nil, nil)}
			},
			want:    []string{"start a", "start b", "run-end a", "stop a"},
			wantErr: "b: port taken",
		},
		{
			name: "a failed Run stops every stage",
			stages: func(r *recorder) []Stage {
				return []Stage{r.stage("a", nil, nil), r.stage("b", nil, errors.New("reader broke")), r.stage("c", nil, nil)}
			},
			want:    []string{"start a", "start b", "start c", "ready", "run-end c", "stop c", "stop b", "run-end a", "stop a"},
			wantErr: "b: reader broke",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			err := Run(ctx, slog.Default(), func() { r.note("ready") }, tc.stages(r)...)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Run: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Run error %v, want %q", err, tc.wantErr)
			}
			if !slices.Equal(r.log, tc.want) {
				t.Errorf("got\n  %v\nwant\n  %v", r.log, tc.want)
			}
		})
	}
}

// A Run that returns without error before its turn is a failure too: a
// stage that silently stops must not leave the daemon running without it.
func TestRunReturnsEarly(t *testing.T) {
	err := Run(context.Background(), slog.Default(), nil, Stage{Name: "reader", Run: func(context.Context) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), "reader stopped unexpectedly") {
		t.Fatalf("Run = %v", err)
	}
}
