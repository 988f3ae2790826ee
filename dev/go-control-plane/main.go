// pier-gcp-xds: the go-control-plane anchor of Pier's xDS fan-out benchmark (benches/xds_anchor.rs).
//
// A small ADS server built the way go-control-plane's users build one: pkg/cache/v3's snapshot
// cache (ADS mode, one snapshot per node group: the node hash is node.cluster, as Pier groups
// Envoys) behind pkg/server/v3 (SotW and delta ADS, ordered as Pier orders them). It serves
// the resources Pier translated, read from a JSON file the benchmark writes: variants of one
// group's Clusters, ClusterLoadAssignments and Listeners as the protobuf bytes of Pier's Any
// values, with Pier's per-type versions.
//
// Two modes:
//   - typed: every snapshot is built from typed envoy messages (unmarshalled afresh from the
//     file's bytes, standing in for a translation step), and go-control-plane marshals them, as
//     its users run it (v0.14 marshals each resource once per snapshot, then shares the bytes).
//   - raw: every resource is a types.ResourceWithName (go-control-plane's hook for out-of-tree
//     resources) whose protobuf is exactly Pier's bytes, kept as the unknown fields of an empty
//     message: marshalling copies them unchanged, nothing is re-encoded.
//
// A control API over HTTP (localhost): POST /set?variant=N builds that variant's snapshot, sets
// it and answers the wall-clock time of the set (taken just before SetSnapshot, after the
// snapshot was built); GET /version names the versions built in.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// resourcesFile is what the benchmark writes: variants of one node group's config.
type resourcesFile struct {
	Group    string    `json:"group"`
	Variants []variant `json:"variants"`
}

type variant struct {
	Types []typeResources `json:"types"`
}

type typeResources struct {
	TypeURL   string        `json:"type_url"`
	Version   string        `json:"version"`
	Resources []rawResource `json:"resources"`
}

type rawResource struct {
	Name  string `json:"name"`
	Value []byte `json:"value"` // base64 in JSON
}

// bytesResource is a resource whose protobuf encoding is exactly the bytes it was given: an
// empty message carrying them as unknown fields, named for the cache.
type bytesResource struct {
	*emptypb.Empty
	name string
}

func (r bytesResource) GetName() string { return r.name }

var _ types.ResourceWithName = bytesResource{}

func newBytesResource(name string, value []byte) bytesResource {
	m := &emptypb.Empty{}
	m.ProtoReflect().SetUnknown(value)
	return bytesResource{Empty: m, name: name}
}

// groupHash keys snapshots by node.cluster: one snapshot per group of Envoys, as Pier does.
type groupHash struct{}

func (groupHash) ID(node *core.Node) string { return node.GetCluster() }

func typed(typeURL string, value []byte) (types.Resource, error) {
	var m proto.Message
	switch typeURL {
	case resourcev3.ClusterType:
		m = &cluster.Cluster{}
	case resourcev3.EndpointType:
		m = &endpoint.ClusterLoadAssignment{}
	case resourcev3.ListenerType:
		m = &listener.Listener{}
	default:
		return nil, fmt.Errorf("unsupported type %s", typeURL)
	}
	if err := proto.Unmarshal(value, m); err != nil {
		return nil, fmt.Errorf("%s: %w", typeURL, err)
	}
	return m, nil
}

func build(v variant, raw bool) (*cachev3.Snapshot, error) {
	snap := &cachev3.Snapshot{}
	for _, t := range v.Types {
		items := make([]types.Resource, 0, len(t.Resources))
		for _, r := range t.Resources {
			if raw {
				items = append(items, newBytesResource(r.Name, r.Value))
				continue
			}
			m, err := typed(t.TypeURL, r.Value)
			if err != nil {
				return nil, err
			}
			items = append(items, m)
		}
		idx := cachev3.GetResponseType(t.TypeURL)
		if idx == types.UnknownType {
			return nil, fmt.Errorf("unknown type %s", t.TypeURL)
		}
		snap.Resources[idx] = cachev3.NewResources(t.Version, items)
	}
	return snap, nil
}

func moduleVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range info.Deps {
		if d.Path == path {
			return d.Version
		}
	}
	return "unknown"
}

func main() {
	listen := flag.String("listen", "127.0.0.1:18000", "ADS address")
	control := flag.String("control", "127.0.0.1:18001", "control API address")
	file := flag.String("resources", "", "resources JSON written by the benchmark")
	mode := flag.String("mode", "typed", "typed | raw")
	flag.Parse()
	if *mode != "typed" && *mode != "raw" {
		log.Fatalf("-mode must be typed or raw, not %q", *mode)
	}
	raw := *mode == "raw"
	text, err := os.ReadFile(*file)
	if err != nil {
		log.Fatalf("reading resources: %v", err)
	}
	var res resourcesFile
	if err := json.Unmarshal(text, &res); err != nil {
		log.Fatalf("parsing resources: %v", err)
	}
	if len(res.Variants) == 0 {
		log.Fatalf("%s has no variants", *file)
	}
	// Every variant must build before anything is served.
	for i, v := range res.Variants {
		if _, err := build(v, raw); err != nil {
			log.Fatalf("variant %d: %v", i, err)
		}
	}

	ctx := context.Background()
	snapshots := cachev3.NewSnapshotCache(true, groupHash{}, gcplog.LoggerFuncs{})
	var mu sync.Mutex
	set := func(i int) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		snap, err := build(res.Variants[i], raw)
		if err != nil {
			return 0, err
		}
		at := time.Now().UnixNano()
		if err := snapshots.SetSnapshot(ctx, res.Group, snap); err != nil {
			return 0, err
		}
		return at, nil
	}
	if _, err := set(0); err != nil {
		log.Fatalf("first snapshot: %v", err)
	}

	xds := serverv3.NewServer(ctx, snapshots, serverv3.CallbackFuncs{}, sotw.WithOrderedADS())
	grpcServer := grpc.NewServer(grpc.MaxConcurrentStreams(1 << 20))
	discovery.RegisterAggregatedDiscoveryServiceServer(grpcServer, xds)
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen %s: %v", *listen, err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /set", func(w http.ResponseWriter, r *http.Request) {
		i, err := strconv.Atoi(r.URL.Query().Get("variant"))
		if err != nil || i < 0 || i >= len(res.Variants) {
			http.Error(w, "variant must be 0.."+strconv.Itoa(len(res.Variants)-1), http.StatusBadRequest)
			return
		}
		at, err := set(i)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"variant": i, "set_unix_nanos": at})
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"go_control_plane": moduleVersion("github.com/envoyproxy/go-control-plane"),
			"envoy_api":        moduleVersion("github.com/envoyproxy/go-control-plane/envoy"),
			"grpc":             moduleVersion("google.golang.org/grpc"),
			"go":               runtime.Version(),
			"mode":             *mode,
		})
	})
	ctl, err := net.Listen("tcp", *control)
	if err != nil {
		log.Fatalf("listen %s: %v", *control, err)
	}
	go func() { log.Fatal(http.Serve(ctl, mux)) }()
	log.Printf("serving ADS on %s, control on %s, mode %s, %d variants", lis.Addr(), ctl.Addr(), *mode, len(res.Variants))
	log.Fatal(grpcServer.Serve(lis))
}
