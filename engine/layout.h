// The on-media format of a leasefs pool. See ../../docs/pool_format.md, which
// this header mirrors field for field; change both together.
//
// Every multi-byte field is little-endian (the only byte order leasefs runs
// on; see the static_assert below). Every struct has a fixed size pinned by
// static_assert, and every field's offset is pinned too, so that a compiler or
// an edit cannot move a byte without failing the build.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace leasefs::layout {

static_assert(std::endian::native == std::endian::little,
              "leasefs pools are little-endian and are accessed in place");

// ---------------------------------------------------------------------------
// Geometry

inline constexpr uint32_t kBlockSize = 4096;
inline constexpr uint32_t kBlockShift = 12;
static_assert(1u << kBlockShift == kBlockSize);

// Version 2 made the quarantine table a table of reach records (below).
// Version 3 initializes the inode and refcount tables lazily, up to two
// marks in the superblock's mutable area (Superblock::inode_mark). A
// writable mount upgrades an older pool in place (docs/pool_format.md
// "Upgrading an older pool").
inline constexpr uint32_t kFormatVersion = 3;
inline constexpr uint32_t kFormatVersionV2 = 2;
inline constexpr uint32_t kFormatVersionV1 = 1;

// "\x89LEASEFS": the high-bit first byte marks the file as binary and catches
// 7-bit channels (the trick PNG's signature uses); the rest names the format.
inline constexpr uint8_t kSuperMagic[8] = {0x89, 'L', 'E', 'A', 'S', 'E', 'F', 'S'};
inline constexpr uint8_t kJournalMagic[8] = {'L', 'E', 'A', 'S', 'E', 'J', 'N', 'L'};
inline constexpr uint8_t kExtentBlockMagic[8] = {'L', 'E', 'A', 'S', 'E', 'E', 'X', 'T'};
inline constexpr uint8_t kDirBlockMagic[8] = {'L', 'E', 'A', 'S', 'E', 'D', 'I', 'R'};
inline constexpr uint8_t kXattrBlockMagic[8] = {'L', 'E', 'A', 'S', 'E', 'X', 'A', 'T'};
inline constexpr uint8_t kXattrLeafMagic[8] = {'L', 'E', 'A', 'S', 'E', 'X', 'L', 'F'};

inline constexpr uint64_t kSuperBlock = 0;        // primary superblock
inline constexpr uint64_t kBackupSuperBlock = 1;  // identical copy, written by mkfs
inline constexpr uint64_t kRootIno = 1;           // inode 0 is never used

inline constexpr uint64_t kMinPoolBytes = 4ull << 20;

// Limits a user meets.
inline constexpr uint64_t kMaxFileSize = uint64_t{1} << 60;  // EFBIG beyond
inline constexpr uint32_t kMaxLinks = 65000;                 // EMLINK beyond
inline constexpr uint32_t kMaxSymlink = 4095;                // ENAMETOOLONG beyond

// Read-only-compatible feature bits (Superblock::feature_ro_compat): a
// leasefs that does not know one may mount the pool read-only only, since
// its writes would break a rule it does not know. Set in place when first
// needed (docs/pool_format.md "Adding a feature"); never cleared.
enum FeatureRoCompat : uint64_t {
  // Inodes may carry attribute flags (InodeFlags kInodeSync..kInodeDirsync):
  // an older leasefs would let an immutable or append-only file change.
  kRoCompatAttrFlags = uint64_t{1} << 0,
};
inline constexpr uint64_t kKnownRoCompat = kRoCompatAttrFlags;

// Incompatible feature bits (Superblock::feature_incompat): a leasefs that
// does not know one refuses the pool, which it would misread. Set in place
// when first needed, like the bits above; never cleared.
enum FeatureIncompat : uint64_t {
  // Some inode's xattr_block names an xattr leaf chain (below), which an
  // older leasefs would take for a damaged xattr block. Set by the first
  // write that creates a leaf; never cleared.
  kIncompatXattrLeaves = uint64_t{1} << 0,
};
inline constexpr uint64_t kKnownIncompat = kIncompatXattrLeaves;

// ---------------------------------------------------------------------------
// Superblock (block 0, copy in block 1). Bytes [0, 248) are immutable after
// mkfs and covered by `checksum`; the mutable area at 256 is updated in place
// with single 8-byte stores. Its state and times are only a hint; the two
// marks (version 3) are not.

// The marks (version 3): how much of the inode table and of the refcount
// table is initialized. Everything below a mark holds valid slots or
// counts; everything above it is unused (a free inode slot of generation
// 0; a free data block) and its bytes are garbage until a mark rises over
// them, which zeroes them first. Each mark is one 8-byte word in each
// superblock copy's mutable area, stored with one store: bits [0, 44) hold
// the value, bits [44, 64) a check code (MarkCheck in superblock.cc) so that
// a damaged word is told from a real one. The valid copies' largest value is
// the mark (docs/pool_format.md "Lazily initialized tables").
inline constexpr uint32_t kMarkValueBits = 44;
inline constexpr uint64_t kMarkValueMask = (uint64_t{1} << kMarkValueBits) - 1;
// What mkfs initializes unless told otherwise: 1024 inode slots (64 blocks)
// and 64 refcount blocks (the refcounts of 256 MiB of data), or the whole
// table when it is smaller.
inline constexpr uint64_t kDefaultInitInodes = 1024;
inline constexpr uint64_t kDefaultInitRefcountBlocks = 64;

enum SuperState : uint32_t {
  kStateClean = 1,    // cleanly unmounted (or never mounted)
  kStateMounted = 2,  // a daemon has it mounted, or died with it mounted
};

struct Superblock {
  uint8_t magic[8];            // kSuperMagic
  uint32_t version;            // kFormatVersion
  uint32_t block_size;         // kBlockSize
  uint64_t feature_compat;     // unknown bits: ignore
  uint64_t feature_incompat;   // unknown bits: refuse to mount
  uint64_t feature_ro_compat;  // unknown bits: mount read-only only
  uint8_t uuid[16];
  uint64_t pool_bytes;     // bytes of the pool the filesystem spans
  uint64_t total_blocks;   // pool_bytes / kBlockSize
  uint64_t journal_start;  // block numbers and counts of each region ...
  uint64_t journal_blocks;
  uint64_t inode_start;
  uint64_t inode_count;  // inode slots, including the unused slot 0
  uint64_t refcount_start;
  uint64_t refcount_blocks;
  uint64_t quarantine_start;
  uint64_t quarantine_blocks;
  uint64_t data_start;
  uint64_t data_blocks;
  uint64_t root_ino;  // kRootIno
  int64_t mkfs_time_ns;
  uint32_t inode_size;  // sizeof(Inode)
  uint32_t max_name;    // kMaxName
  char label[64];       // NUL-padded
  uint64_t reserved0;
  uint64_t checksum;  // XXH64 (seed 0) of bytes [0, 248)

  // --- mutable area, offset 256 ---
  uint32_t state;  // SuperState
  uint32_t reserved1;
  uint64_t mount_count;
  int64_t last_mount_ns;
  int64_t last_unmount_ns;
  // Version 3 (see kMarkValueBits): inode slots [0, value) are initialized
  // (a multiple of 16, at least 16, at most inode_count) ...
  uint64_t inode_mark;
  // ... and refcount blocks [0, value) are (1 .. refcount_blocks): data
  // blocks [data_start, data_start + min(value * 1024, data_blocks)).
  uint64_t refcount_mark;
  uint8_t reserved2[208];
};
static_assert(sizeof(Superblock) == 512);
static_assert(offsetof(Superblock, version) == 8);
static_assert(offsetof(Superblock, uuid) == 40);
static_assert(offsetof(Superblock, pool_bytes) == 56);
static_assert(offsetof(Superblock, journal_start) == 72);
static_assert(offsetof(Superblock, inode_start) == 88);
static_assert(offsetof(Superblock, refcount_start) == 104);
static_assert(offsetof(Superblock, quarantine_start) == 120);
static_assert(offsetof(Superblock, data_start) == 136);
static_assert(offsetof(Superblock, root_ino) == 152);
static_assert(offsetof(Superblock, mkfs_time_ns) == 160);
static_assert(offsetof(Superblock, inode_size) == 168);
static_assert(offsetof(Superblock, label) == 176);
static_assert(offsetof(Superblock, checksum) == 248);
static_assert(offsetof(Superblock, state) == 256);
static_assert(offsetof(Superblock, mount_count) == 264);
static_assert(offsetof(Superblock, last_unmount_ns) == 280);
static_assert(offsetof(Superblock, inode_mark) == 288);
static_assert(offsetof(Superblock, refcount_mark) == 296);
inline constexpr size_t kSuperChecksummedBytes = offsetof(Superblock, checksum);

// ---------------------------------------------------------------------------
// Journal: one header (first 64 bytes of block journal_start) and a body of
// records in the blocks after it. One transaction at a time; see
// docs/pool_format.md "Journal" for the commit protocol.

struct JournalHeader {
  uint8_t magic[8];  // kJournalMagic when a committed transaction is present;
                     // zeroed (one 8-byte store) once it has been applied
  uint64_t seq;      // transaction number, +1 per transaction
  uint64_t body_bytes;
  uint64_t body_xxh64;  // XXH64 (seed = seq) of the body's first body_bytes
  uint32_t record_count;
  uint32_t reserved0;
  uint64_t reserved1;
  uint64_t reserved2;
  uint64_t header_xxh64;  // XXH64 (seed 0) of bytes [0, 56)
};
static_assert(sizeof(JournalHeader) == 64);
static_assert(offsetof(JournalHeader, seq) == 8);
static_assert(offsetof(JournalHeader, body_xxh64) == 24);
static_assert(offsetof(JournalHeader, record_count) == 32);
static_assert(offsetof(JournalHeader, header_xxh64) == 56);

enum JournalRecordType : uint16_t {
  kRecCopy = 1,    // payload: `length` bytes, copied to `dest`
  kRecFill32 = 2,  // payload: one uint32 (+4 pad); `length` words at `dest`
                   // are set to it
};

struct JournalRecord {
  uint16_t type;  // JournalRecordType
  uint16_t reserved;
  uint32_t length;  // kRecCopy: bytes; kRecFill32: uint32 words
  uint64_t dest;    // byte offset in the pool
  // payload follows, padded to a multiple of 8 bytes
};
static_assert(sizeof(JournalRecord) == 16);
static_assert(offsetof(JournalRecord, length) == 4);
static_assert(offsetof(JournalRecord, dest) == 8);

// ---------------------------------------------------------------------------
// Inodes: inode_count slots of 256 bytes from block inode_start. Slot N holds
// inode number N; slot 0 is never used. A slot with mode == 0 is free.

inline constexpr uint32_t kInodeInlineBytes = 144;
inline constexpr uint32_t kInlineExtents = 6;

enum InodeFlags : uint32_t {
  kInodeInlineData = 1u << 0,  // symlink target stored in Inode::inline_area
  // Attribute flags, as chattr(1) sets them (FS_IOC_SETFLAGS; docs/
  // attr-flags.md). Only on regular files and directories, and only in a
  // pool with kRoCompatAttrFlags.
  kInodeSync = 1u << 16,       // FS_SYNC_FL 'S': stored (every change is synchronous)
  kInodeImmutable = 1u << 17,  // FS_IMMUTABLE_FL 'i': nothing may change it
  kInodeAppend = 1u << 18,     // FS_APPEND_FL 'a': bytes may only be added at the end
  kInodeNodump = 1u << 19,     // FS_NODUMP_FL 'd': stored only (for dump(8))
  kInodeNoatime = 1u << 20,    // FS_NOATIME_FL 'A': reads never update atime
  kInodeDirsync = 1u << 21,    // FS_DIRSYNC_FL 'D': directories only; stored
};
// The attribute flags a regular file and a directory may carry.
inline constexpr uint32_t kRegularAttrFlags =
    kInodeSync | kInodeImmutable | kInodeAppend | kInodeNodump | kInodeNoatime;
inline constexpr uint32_t kDirAttrFlags = kRegularAttrFlags | kInodeDirsync;

// One run of file blocks mapped to pool blocks.
struct Extent {
  uint64_t file_block;  // first file block (file offset / kBlockSize)
  uint64_t pool_block;  // first pool block (pool offset / kBlockSize)
  uint32_t length;      // blocks; 0 marks a free slot
  uint32_t flags;       // ExtentFlags
};
static_assert(sizeof(Extent) == 24);
static_assert(offsetof(Extent, pool_block) == 8);
static_assert(offsetof(Extent, length) == 16);
static_assert(offsetof(Extent, flags) == 20);

enum ExtentFlags : uint32_t {
  kExtentUnwritten = 1u << 0,  // allocated (fallocate) but reads as zeros
};
inline constexpr uint32_t kKnownExtentFlags = kExtentUnwritten;

struct Inode {
  uint32_t mode;  // S_IFMT | permission bits; 0 = free slot
  uint32_t nlink;
  uint32_t uid;
  uint32_t gid;
  uint64_t size;    // bytes
  uint64_t blocks;  // pool blocks mapped by this inode's extents
  int64_t atime_ns;
  int64_t mtime_ns;
  int64_t ctime_ns;
  int64_t btime_ns;       // creation time
  uint64_t parent;        // directories: parent directory (root: itself); else 0
  uint64_t rdev;          // device number of character/block special files
  uint32_t generation;    // +1 each time the slot is reused (never 0 in use)
  uint32_t flags;         // InodeFlags
  uint64_t xattr_block;   // pool block of the xattr block, 0 = none
  uint64_t extent_block;  // first extent block of the chain, 0 = none
  uint64_t reserved;
  // Extent[kInlineExtents], or the symlink target when kInodeInlineData.
  uint8_t inline_area[kInodeInlineBytes];
};
static_assert(sizeof(Inode) == 256);
static_assert(offsetof(Inode, size) == 16);
static_assert(offsetof(Inode, blocks) == 24);
static_assert(offsetof(Inode, atime_ns) == 32);
static_assert(offsetof(Inode, mtime_ns) == 40);
static_assert(offsetof(Inode, ctime_ns) == 48);
static_assert(offsetof(Inode, btime_ns) == 56);
static_assert(offsetof(Inode, parent) == 64);
static_assert(offsetof(Inode, rdev) == 72);
static_assert(offsetof(Inode, generation) == 80);
static_assert(offsetof(Inode, flags) == 84);
static_assert(offsetof(Inode, xattr_block) == 88);
static_assert(offsetof(Inode, extent_block) == 96);
static_assert(offsetof(Inode, inline_area) == 112);
static_assert(kInlineExtents * sizeof(Extent) == kInodeInlineBytes);
inline constexpr uint32_t kInodesPerBlock = kBlockSize / sizeof(Inode);

// ---------------------------------------------------------------------------
// Intent: a block-map change too big for one transaction (clone, punch, zero
// range, collapse, insert) is done in several, and records what it is doing
// in inode slot 0, which is otherwise unused, in its first transaction; each
// later transaction moves `cursor`; the last zeroes the record. A mount that
// finds a record finishes the change (docs/pool_format.md "Intents"), so the
// change is atomic across a crash. `zero_mode` sits where an inode's mode does
// and stays 0, so slot 0 still reads as a free inode.

enum IntentType : uint32_t {
  kIntentNone = 0,
  kIntentClone = 1,     // map src [src_block, +count) at first_block of ino
  kIntentPunch = 2,     // unmap [first_block, +count)
  kIntentZero = 3,      // make [first_block, +count) unwritten or holes
  kIntentCollapse = 4,  // unmap [first_block, +count), then shift the rest down
  kIntentInsert = 5,    // shift [first_block, end) up by count
};

struct Intent {
  uint32_t zero_mode;  // always 0
  uint32_t type;       // IntentType
  uint64_t ino;        // the file being changed
  uint64_t src_ino;    // kIntentClone: the source file (may equal ino)
  uint64_t src_block;  // kIntentClone: first source block
  uint64_t first_block;
  uint64_t count;     // blocks
  uint64_t cursor;    // progress; meaning per type (see remap_ops.cc)
  uint32_t phase;     // kIntentCollapse: 0 unmapping, 1 shifting
  uint32_t new_mode;  // mode to set when done, 0 = unchanged (DropPrivs runs before)
  uint64_t new_size;  // size to set when done
  int64_t time_ns;    // mtime and ctime to set when done
  uint8_t reserved[176];
};
static_assert(sizeof(Intent) == sizeof(Inode));
static_assert(offsetof(Intent, type) == 4);
static_assert(offsetof(Intent, cursor) == 48);
static_assert(offsetof(Intent, phase) == 56);
static_assert(offsetof(Intent, new_size) == 64);
static_assert(offsetof(Intent, time_ns) == 72);

// ---------------------------------------------------------------------------
// Extent blocks: a singly linked chain per inode holding the extents that do
// not fit inline. Slots are unordered; a slot with length == 0 is free.

struct ExtentBlockHeader {
  uint8_t magic[8];  // kExtentBlockMagic
  uint64_t owner_ino;
  uint64_t next_block;  // next extent block of the chain, 0 = last
  uint64_t reserved;
};
static_assert(sizeof(ExtentBlockHeader) == 32);
inline constexpr uint32_t kExtentsPerBlock =
    (kBlockSize - sizeof(ExtentBlockHeader)) / sizeof(Extent);
static_assert(kExtentsPerBlock == 169);

struct ExtentBlock {
  ExtentBlockHeader header;
  Extent slots[kExtentsPerBlock];
  uint8_t pad[kBlockSize - sizeof(ExtentBlockHeader) - kExtentsPerBlock * sizeof(Extent)];
};
static_assert(sizeof(ExtentBlock) == kBlockSize);

// ---------------------------------------------------------------------------
// Directory blocks: the data blocks of a directory inode. 64 slots of 64
// bytes; slot 0 is the block header; an entry takes 1-5 consecutive slots of
// one block. "." and ".." are not stored.

inline constexpr uint32_t kDirSlotSize = 64;
inline constexpr uint32_t kDirSlotsPerBlock = kBlockSize / kDirSlotSize;
inline constexpr uint32_t kMaxName = 255;

struct DirBlockHeader {
  uint8_t magic[8];  // kDirBlockMagic
  uint64_t owner_ino;
  uint64_t block_index;  // which block of the directory this is
  uint8_t reserved[40];
};
static_assert(sizeof(DirBlockHeader) == kDirSlotSize);

struct DirEntryHeader {
  uint64_t ino;        // 0 = free slot
  uint8_t slot_count;  // slots this entry spans, 1..5; 0 in a free slot
  uint8_t type;        // Linux d_type (DT_REG, DT_DIR, ...)
  uint8_t name_len;    // 1..kMaxName
  uint8_t reserved[5];
  // name bytes follow (no NUL), running on into the entry's next slots
};
static_assert(sizeof(DirEntryHeader) == 16);
static_assert(offsetof(DirEntryHeader, slot_count) == 8);
static_assert(offsetof(DirEntryHeader, name_len) == 10);

// Slots needed for an entry whose name is `name_len` bytes long.
constexpr uint32_t DirEntrySlots(uint32_t name_len) {
  return (static_cast<uint32_t>(sizeof(DirEntryHeader)) + name_len + kDirSlotSize - 1) /
         kDirSlotSize;
}
static_assert(DirEntrySlots(48) == 1 && DirEntrySlots(49) == 2);
static_assert(DirEntrySlots(kMaxName) == 5);

// ---------------------------------------------------------------------------
// Extended attributes. Inode::xattr_block names either a single xattr block
// (the format before kIncompatXattrLeaves: still read, rewritten in place
// when an attribute is removed, converted to leaves on the first set) or the
// first leaf of a chain of xattr leaves; the block's magic tells which.

// The single xattr block: entries packed after the header.
struct XattrBlockHeader {
  uint8_t magic[8];  // kXattrBlockMagic
  uint64_t owner_ino;
  uint32_t used_bytes;  // bytes of entries after the header
  uint32_t entry_count;
  uint64_t reserved;
};
static_assert(sizeof(XattrBlockHeader) == 32);

struct XattrEntryHeader {
  uint8_t name_len;  // full name including its namespace prefix, 1..255
  uint8_t reserved;
  uint16_t value_len;
  // name bytes, then value bytes; the entry is padded to a multiple of 4
};
static_assert(sizeof(XattrEntryHeader) == 4);
inline constexpr uint32_t kXattrSpace = kBlockSize - sizeof(XattrBlockHeader);

// Xattr leaves: 64 slots of 64 bytes, slot 0 the header; an entry takes
// 1..kXattrMaxSlots consecutive slots of one leaf. A value is stored in the
// entry after the name when the entry stays within kXattrInlineMax bytes,
// else in value blocks of its own (REMOTE), listed by runs in the entry.
// Value blocks are never changed in place: a new value goes to new blocks,
// and one transaction switches the entry (docs/pool_format.md).
inline constexpr uint32_t kXattrSlotSize = 64;
inline constexpr uint32_t kXattrSlotsPerLeaf = kBlockSize / kXattrSlotSize;
inline constexpr uint32_t kXattrMaxValue = 65536;  // Linux's XATTR_SIZE_MAX
inline constexpr uint32_t kXattrMaxValueBlocks = kXattrMaxValue / kBlockSize;
inline constexpr uint32_t kXattrInlineMax = 31 * kXattrSlotSize;  // two fit a leaf

struct XattrLeafHeader {
  uint8_t magic[8];  // kXattrLeafMagic
  uint64_t owner_ino;
  uint64_t next_block;  // next leaf of the inode's chain, 0 = last
  uint8_t reserved[40];
};
static_assert(sizeof(XattrLeafHeader) == kXattrSlotSize);
static_assert(offsetof(XattrLeafHeader, next_block) == 16);

enum XattrEntryFlags : uint8_t {
  kXattrRemote = 1u << 0,  // the value lives in value blocks (runs follow the name)
};
inline constexpr uint8_t kKnownXattrFlags = kXattrRemote;

struct XattrLeafEntry {
  uint8_t slot_count;  // slots the entry spans, 1..63; 0 in a free slot
  uint8_t name_len;    // 1..255, the full name ("user.x", "trusted.y", ...)
  uint8_t flags;       // XattrEntryFlags
  uint8_t run_count;   // REMOTE: runs after the name, 1..16; else 0
  uint32_t value_len;  // 0..kXattrMaxValue
  uint64_t value_xxh64;  // XXH64 (seed 0) of the value's bytes
  // name bytes, then: the value (inline), or, from the next multiple of 8
  // of the entry, run_count XattrRun (REMOTE)
};
static_assert(sizeof(XattrLeafEntry) == 16);
static_assert(offsetof(XattrLeafEntry, value_len) == 4);
static_assert(offsetof(XattrLeafEntry, value_xxh64) == 8);

// Value blocks [pool_block, +length); the runs of an entry, in order, hold
// the value's bytes, zero-padded to the end of the last block.
struct XattrRun {
  uint64_t pool_block;
  uint32_t length;  // blocks, >= 1
  uint32_t reserved;
};
static_assert(sizeof(XattrRun) == 16);
inline constexpr uint32_t kXattrMaxRuns = kXattrMaxValueBlocks;

// Bytes of an entry: inline, or with `runs` value runs.
constexpr uint32_t XattrInlineBytes(uint32_t name_len, uint32_t value_len) {
  return static_cast<uint32_t>(sizeof(XattrLeafEntry)) + name_len + value_len;
}
constexpr uint32_t XattrRemoteBytes(uint32_t name_len, uint32_t runs) {
  return static_cast<uint32_t>(sizeof(XattrLeafEntry)) + ((name_len + 7) & ~7u) +
         runs * static_cast<uint32_t>(sizeof(XattrRun));
}
constexpr uint32_t XattrSlots(uint32_t bytes) {
  return (bytes + kXattrSlotSize - 1) / kXattrSlotSize;
}
// The largest entries: a 255-byte name with 16 runs, and the inline limit.
static_assert(XattrSlots(XattrRemoteBytes(kMaxName, kXattrMaxRuns)) == 9);
static_assert(XattrSlots(kXattrInlineMax) == 31);
inline constexpr uint32_t kXattrMaxSlots = kXattrSlotsPerLeaf - 1;

// ---------------------------------------------------------------------------
// Block reference counts: one uint32 per data block, from block
// refcount_start; entry i is data block data_start + i. 0 = free. Otherwise
// the references from files (extents, the links that name extent blocks,
// xattr blocks and xattr leaves, the runs of xattr values; a block shared by
// reflink is counted once per extent that maps it), plus one if a reach record covers the block and no file
// references it (the block is then "quarantined").

inline constexpr uint32_t kRefcountsPerBlock = kBlockSize / sizeof(uint32_t);

// ---------------------------------------------------------------------------
// Quarantine table (version 2): reach records. A record says that process
// `owner` may still reach pool blocks [pool_block, +length), which were
// handed out for DAX under mapping `map_id`. It is written when the blocks
// are handed out and removed when the owner confirms the unmap or is gone. A
// block that its files let go of while a record covers it stays allocated
// (refcount 1, held by the quarantine) and is never given to another file.

enum QuarantineRecordFlags : uint32_t {
  kReachWritable = 1u << 0,  // handed out for writing
};
inline constexpr uint32_t kKnownReachFlags = kReachWritable;

struct QuarantineRecord {
  uint64_t pool_block;  // first pool block, inside the data area
  uint32_t length;      // blocks; 0 = free record
  uint32_t flags;       // QuarantineRecordFlags
  uint64_t map_id;      // the mapping (never 0 in a live record)
  uint64_t ino;         // the file the blocks belonged to when handed out
  uint64_t file_block;  // and where in it
  int32_t owner_pid;    // > 0
  uint32_t uid;          // the user who made the mapping (any value)
  uint64_t owner_start;  // the owner's start time (clock ticks after boot)
  uint64_t owner_boot;   // the boot it ran in (first 64 bits of boot_id)
};
static_assert(sizeof(QuarantineRecord) == 64);
static_assert(offsetof(QuarantineRecord, length) == 8);
static_assert(offsetof(QuarantineRecord, flags) == 12);
static_assert(offsetof(QuarantineRecord, map_id) == 16);
static_assert(offsetof(QuarantineRecord, ino) == 24);
static_assert(offsetof(QuarantineRecord, file_block) == 32);
static_assert(offsetof(QuarantineRecord, owner_pid) == 40);
static_assert(offsetof(QuarantineRecord, uid) == 44);
static_assert(offsetof(QuarantineRecord, owner_start) == 48);
static_assert(offsetof(QuarantineRecord, owner_boot) == 56);
inline constexpr uint32_t kQuarantinePerBlock = kBlockSize / sizeof(QuarantineRecord);
static_assert(kQuarantinePerBlock == 64);

// Version 1's entry, 32 bytes, 128 per block. Nothing ever wrote one; fsck
// still reads a version-1 table by this layout.
struct QuarantineEntryV1 {
  uint64_t pool_block;
  uint32_t length;  // blocks; 0 = free entry
  uint32_t reason;
  uint64_t tag;
  int64_t since_ns;
};
static_assert(sizeof(QuarantineEntryV1) == 32);
inline constexpr uint32_t kQuarantineV1PerBlock = kBlockSize / sizeof(QuarantineEntryV1);

}  // namespace leasefs::layout
