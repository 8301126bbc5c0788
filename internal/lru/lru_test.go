package lru

import "testing"

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	c := New(30, func(s string) int64 { return int64(len(s)) })
	ten := "0123456789"
	c.Put("a", ten)
	c.Put("b", ten)
	c.Put("c", ten)
	c.Get("a") // a is now more recent than b
	c.Put("d", ten)
	_, a := c.Get("a")
	_, b := c.Get("b")
	_, cc := c.Get("c")
	_, d := c.Get("d")
	if !a || b || !cc || !d {
		t.Errorf("after eviction: a=%v b=%v c=%v d=%v, want b evicted", a, b, cc, d)
	}
	if c.Put("big", ten+ten+ten+"x") {
		t.Error("a value larger than the cache was stored")
	}
	c.Put("a", ten) // replacing does not count twice
	if c.Size() != 30 {
		t.Errorf("size %d, want 30", c.Size())
	}
	c.Delete("a")
	if c.Size() != 20 || len(c.Keys()) != 2 {
		t.Errorf("after Delete: size %d, keys %v", c.Size(), c.Keys())
	}
}

func TestPeekDoesNotRefreshAndDeleteIfChecksTheValue(t *testing.T) {
	c := New(2, func(int) int64 { return 1 })
	c.Put("a", 1)
	c.Put("b", 2)
	if v, ok := c.Peek("a"); !ok || v != 1 {
		t.Fatalf("Peek(a) = %v, %v", v, ok)
	}
	c.Put("c", 3) // a is still the least recently used: Peek did not use it
	if _, ok := c.Peek("a"); ok {
		t.Error("a survived: Peek marked it used")
	}
	if c.DeleteIf("b", func(v int) bool { return v == 99 }) {
		t.Error("DeleteIf removed a value that did not match")
	}
	if !c.DeleteIf("b", func(v int) bool { return v == 2 }) {
		t.Error("DeleteIf kept a value that matched")
	}
	if _, ok := c.Peek("b"); ok || c.Size() != 1 {
		t.Errorf("after DeleteIf: b present %v, size %d", ok, c.Size())
	}
}
