#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> all_routes() {
    std::vector<Route> all;
    for (auto domain :
         {auth_routes, me_routes, accounts_routes, members_routes, sub_user_routes, api_key_routes,
          audit_routes, voice_routes, security_routes, usage_routes}) {
        std::vector<Route> routes = domain();
        for (auto &r : routes)
            all.push_back(std::move(r));
    }
    return all;
}

}  // namespace tenancy::gateway
