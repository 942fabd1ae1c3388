// Routes: the account subtree: list, get, create, update, lifecycle, move, tree (not yet served).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

std::vector<Route> accounts_routes() {
    return {};
}

}  // namespace tenancy::gateway
