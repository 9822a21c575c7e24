// Test helpers for the engine: a formatted in-memory pool, mounting it, and
// a canonical dump of a filesystem's visible state for comparisons.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "engine/filesystem.h"
#include "engine/format.h"
#include "engine/sim_media.h"

namespace leasefs::engine::testing {

// A freshly formatted SimMedia of `bytes` bytes.
std::unique_ptr<SimMedia> FormattedPool(size_t bytes = 8 << 20,
                                        const FormatOptions& opts = FormatOptions{});

// Mounts `media`; fails the test (REQUIRE) if the mount fails. *raw keeps a
// pointer to the media for crash control.
std::unique_ptr<Filesystem> MustMount(std::unique_ptr<SimMedia> media, SimMedia** raw = nullptr,
                                      MountReport* report = nullptr);

// Mounts an image (copy of a pool).
std::unique_ptr<Filesystem> MountImage(const std::vector<char>& image, SimMedia** raw = nullptr);

// Everything a user can observe of the tree, one line per path: type, mode,
// owner, nlink, size, content hash, symlink target, xattrs. (Block counts and
// times are left out.)
std::string Observe(Filesystem& fs);

// Writes `data` at `off` through the API; REQUIREs success.
void MustWrite(Filesystem& fs, Ino ino, uint64_t off, const std::string& data);
// Reads [off, off + len) through the API.
std::string ReadAll(Filesystem& fs, Ino ino, uint64_t off = 0, size_t len = 1 << 30);

inline const Cred kRoot = Cred::Root();

// Gives inode `ino` of an unmounted pool image the older format's single
// xattr block holding `attrs` (a free data block, its refcount, the inode's
// link): what a pool written before xattr leaves holds.
void PutOldXattrBlock(std::vector<char>& img, Ino ino,
                      const std::vector<std::pair<std::string, std::string>>& attrs);

// Test-only shorthands that REQUIRE success and return the inode number.
Ino MustCreate(Filesystem& fs, Ino parent, const std::string& name, mode_t mode = 0644);
Ino MustMkdir(Filesystem& fs, Ino parent, const std::string& name, mode_t mode = 0755);
Ino MustLookup(Filesystem& fs, Ino parent, const std::string& name);

}  // namespace leasefs::engine::testing
