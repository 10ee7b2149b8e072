package e2e

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/sextant/sextant/collector"
)

// counters flattens every unsigned/signed integer in v (struct fields,
// arrays, maps) into path → value.
func counters(v reflect.Value, path string, out map[string]int64) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			counters(v.Elem(), path, out)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			counters(v.Field(i), path+"."+v.Type().Field(i).Name, out)
		}
	case reflect.Array, reflect.Slice:
		for i := range v.Len() {
			counters(v.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			counters(v.MapIndex(k), fmt.Sprintf("%s[%v]", path, k), out)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		out[path] = v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		out[path] = int64(v.Uint())
	}
}

// decodeErrorsGrew reports whether some error counter of the collector went
// up between two snapshots.
func decodeErrorsGrew(before, after collector.Stats) bool {
	b, a := map[string]int64{}, map[string]int64{}
	counters(reflect.ValueOf(before), "", b)
	counters(reflect.ValueOf(after), "", a)
	for k, v := range a {
		if strings.Contains(strings.ToLower(k), "err") && v > b[k] {
			return true
		}
	}
	return false
}
