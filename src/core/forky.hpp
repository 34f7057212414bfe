// libforky's public API: what the forky CLI calls, and what forkyd will call, without
// copying logic out of either. Everything a front end needs is here: connecting to a host
// and its pool, specs and settings, VMs (up, list, stop, remove, console), the fork, the
// history (snapshots, revert, squash), the lineage tree, gc and bench, the errors they
// throw (with their exit codes) and the cancellation they honour.
#pragma once

#include "bench.hpp"      // run_bench
#include "cancel.hpp"     // CancelToken
#include "config.hpp"     // load_config
#include "diff.hpp"       // vm_diff
#include "errors.hpp"     // Error, exit codes
#include "export.hpp"     // vm_export, vm_import
#include "fleet.hpp"      // Fleet: the hosts a command works on
#include "fork.hpp"       // vm_fork, parse_point_ref, find_fork_point
#include "fork_point.hpp" // ForkPoint
#include "gc.hpp"         // collect_garbage
#include "gpus.hpp"       // list_gpus
#include "history.hpp"    // vm_snapshot(s), vm_revert, vm_remove_snapshot/_recursive, vm_squash
#include "host.hpp"       // Host, HostOptions, VmState
#include "hosts.hpp"      // Inventory, load_inventory, survey_hosts
#include "ksm.hpp"        // read_ksm, qemu_processes, memory_stats, KsmTuner
#include "names.hpp"      // require_valid_name, quoted
#include "operation.hpp"  // OpContext, Faults
#include "placement.hpp"  // PlacementPolicy, place
#include "plan.hpp"       // bytes_per_child
#include "policies.hpp"   // TtlPolicy, QuotaPolicy, ttl_left
#include "ship.hpp"       // ship_fork_point
#include "spec.hpp"       // load_spec
#include "tree.hpp"       // lineage_tree
#include "units.hpp"      // format_size, parse_size
#include "vm.hpp"         // vm_up, vm_list, vm_info, vm_stop, vm_remove, vm_console
#include "warm_pool.hpp"  // warm pools: create, acquire, refill
