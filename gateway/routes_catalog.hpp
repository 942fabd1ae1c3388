// Every domain's routes (one file each), collected into the one table that
// register_routes() serves and /openapi.json describes.
#pragma once

#include "route_table.hpp"

#include <vector>

namespace tenancy::gateway {

std::vector<Route> auth_routes();      // routes_auth.cpp: login, logout, MFA, switch
std::vector<Route> me_routes();        // routes_me.cpp: /v1/me, password, MFA, sessions
std::vector<Route> accounts_routes();  // routes_accounts.cpp
std::vector<Route> members_routes();   // routes_members.cpp: members, invitations
std::vector<Route> sub_user_routes();  // routes_sub_users.cpp
std::vector<Route> api_key_routes();   // routes_api_keys.cpp
std::vector<Route> audit_routes();     // routes_audit.cpp
std::vector<Route>
voice_routes();  // routes_voice.cpp: agents, contacts, conversations, escalations
std::vector<Route> security_routes();  // routes_security.cpp: per-account security settings
std::vector<Route> usage_routes();     // routes_usage.cpp: usage, effective settings

std::vector<Route> all_routes();

}  // namespace tenancy::gateway
