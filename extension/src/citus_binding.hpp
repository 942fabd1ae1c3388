// What the context needs from Citus when the extension is distributed: the
// distributed transaction id (the token's binding across nodes) and the local
// copy of the reference table holding the context keys. See citus_binding.cpp.
#pragma once

extern "C" {
#include "postgres.h"
}

#include <cstdint>

namespace tenancy {

// A Citus distributed transaction id as the workers see it.
struct DistributedXid {
    int32_t node;     // initiator's group id
    uint64_t number;  // 0: none assigned
    int64_t stamp;    // initiator's clock when assigned
    bool originator;  // assigned here, not claimed with assign_distributed_transaction_id()
};

// Citus is loaded and tenancy.context_keys is a Citus table (distribute() ran).
bool citus_distributed();

// This transaction's distributed id; assign one first when `assign` (the
// initiator issuing a token). Throws SqlError on a Citus error.
DistributedXid citus_current_xid(bool assign);

// This node's Citus group id (0: the coordinator).
int32_t citus_local_group();

// The local placement of a reference table (relid's shard on this node), or
// InvalidOid when this node has none. Plain C: call through pg_call.
Oid citus_local_placement(Oid relid);

// The Citus table whose shard relid is, or InvalidOid (not a shard, or Citus
// not loaded): the audit log names the table, not the shard.
Oid citus_shard_table(Oid relid);

// citus.propagate_set_commands is 'local' (SET LOCAL reaches the workers).
bool citus_propagates_set_local();

}  // namespace tenancy
