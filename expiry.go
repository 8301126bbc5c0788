package goproxy

// makeRoom bounds a map of expiring entries, such as the not-found memo
// and the DNS cache: when it holds limit entries, the expired ones go, and
// then any, until there is room for one more.
func makeRoom[K comparable, V any](m map[K]V, limit int, expired func(V) bool) {
	if len(m) < limit {
		return
	}
	for k, v := range m {
		if expired(v) {
			delete(m, k)
		}
	}
	for k := range m {
		if len(m) < limit {
			return
		}
		delete(m, k)
	}
}
