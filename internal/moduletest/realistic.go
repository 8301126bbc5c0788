package moduletest

import (
	"math"
	"math/rand/v2"
	"os"

	"golang.org/x/mod/module"
)

// realisticSizes are points of the distribution of module zip sizes in a
// real graph, as quantiles: the smallest 1 KB, the median 60 KB, the ninth
// decile 2 MB, the largest 40 MB. Sizes between are log-interpolated.
var realisticSizes = []struct {
	q    float64
	size float64
}{{0, 1e3}, {0.5, 60e3}, {0.9, 2e6}, {1, 40e6}}

// RealisticZipSizes returns the zip sizes of n modules spread as those of
// a real module graph are: from 1 KB to 40 MB, a median of 60 KB, a tenth
// above 2 MB (so about a quarter above 512 KiB, where a proxy may fetch in
// parallel ranges). The order is shuffled, the same for every call.
func RealisticZipSizes(n int) []int64 {
	sizes := make([]int64, n)
	for i := range n {
		q := 0.5
		if n > 1 {
			q = float64(i) / float64(n-1)
		}
		for k := 1; k < len(realisticSizes); k++ {
			lo, hi := realisticSizes[k-1], realisticSizes[k]
			if q <= hi.q {
				f := (q - lo.q) / (hi.q - lo.q)
				sizes[i] = int64(math.Exp(math.Log(lo.size) + f*(math.Log(hi.size)-math.Log(lo.size))))
				break
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(n, func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
	return sizes
}

// RealisticGraph returns Graph(n), except that the zip of each generated
// module's newest version (the one RootGoMod requires, so the one "go mod
// download" fetches) has the size RealisticZipSizes(n) gives for it: a
// valid module zip with the version's go.mod, a Go file and pseudo-random
// data stored uncompressed, written to dir. The other versions and the
// special modules keep their small zips.
func RealisticGraph(dir string, n int) ([]*Version, error) {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, err
	}
	vs := Graph(n)
	sizes := RealisticZipSizes(n)
	newestOf := map[string]*Version{}
	for _, v := range vs {
		if cur := newestOf[v.Path]; cur == nil || compareVersions(v.Version, cur.Version) > 0 {
			newestOf[v.Path] = v
		}
	}
	for i := range n {
		old := newestOf[GraphPath(i)]
		escPath, err := module.EscapePath(old.Path)
		if err != nil {
			return nil, err
		}
		name, err := writeSizedZip(dir, old.Path, old.Version, escPath+"@"+old.Version, old.Mod, true, sizes[i])
		if err != nil {
			return nil, err
		}
		for j, v := range vs {
			if v == old {
				vs[j] = &Version{Path: old.Path, Version: old.Version, Time: old.Time, Mod: old.Mod, ZipFile: name}
			}
		}
	}
	return vs, nil
}
