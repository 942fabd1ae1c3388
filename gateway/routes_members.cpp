// Routes: members and invitations (not yet served).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> members_routes() {
    return {};
}

}  // namespace tenancy::gateway
