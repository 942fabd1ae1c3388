// The request context: who acts (principal, credential), in which account, with
// which role. See context.cpp for the design.
#pragma once

#include <cstdint>
#include <string>

namespace tenancy {

enum class PrincipalKind : uint8_t { ApiKey = 1, User = 2, SubUser = 3 };

struct RequestContext {
    PrincipalKind principal_kind;
    uint16_t key_id;          // which server key signed it
    int32_t leader_pid;       // the backend (or parallel leader) it is bound to
    uint32_t leader_lxid;     // ... and that backend's transaction
    int64_t expires_at;       // TimestampTz
    int64_t principal_id;     // api key id, user id or sub-user id
    int64_t credential_id;    // api key id or session id
    int64_t account_id;       // active account
    int64_t main_id;          // its main account
    int64_t home_account_id;  // the credential's own account
    std::string role;
    std::string account_public_id;
    std::string path;       // account_path payload bytes of the active account
    std::string home_path;  // ... and of the credential's account
    // On Citus (citus_binding.hpp): bound to the distributed transaction
    // instead, which every node of it sees (token version 2).
    bool distributed = false;
    int32_t dist_node = 0;
    uint64_t dist_number = 0;
    int64_t dist_stamp = 0;
};

// Called from _PG_init: defines the settings that carry the context.
void context_init();

}  // namespace tenancy
