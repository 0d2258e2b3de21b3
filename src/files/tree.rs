//! A file's SHA-256 Merkle tree over 16 KiB leaves (spec/11-files.md §2), the tree of
//! RFC 6962 §2.1 (Certificate Transparency): leaves hashed as `H(0x00 ‖ leaf)`, inner nodes
//! as `H(0x01 ‖ left ‖ right)`, a tree of n leaves split at the largest power of two below
//! n (no duplicated nodes, so no second preimage by padding). The root names the file in
//! its offer; each leaf arrives with its audit path (RFC 6962 §2.1.1) and is checked
//! against the root before it touches the disk.

use sha2::{Digest, Sha256};

/// Bytes per leaf.
pub const LEAF_SIZE: usize = 16 * 1024;
/// A hash.
pub type Hash = [u8; 32];
/// Levels of a tree of 2⁶⁴ leaves at most: the longest audit path.
pub const MAX_PATH: usize = 64;

/// `H(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree (a file of 0 bytes): `H("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Leaves of a file of `size` bytes (a 0-byte file has none).
pub fn leaf_count(size: u64) -> u64 {
    size.div_ceil(LEAF_SIZE as u64)
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The root over `leaves` (leaf hashes, in order).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `m` among `leaves` (RFC 6962 §2.1.1): sibling hashes from the
/// leaf's level up to the root's children. Empty if `m` is out of range.
pub fn audit_path(leaves: &[Hash], m: u64) -> Vec<Hash> {
    let mut out = Vec::new();
    if (m as usize) < leaves.len() {
        path_into(leaves, m as usize, &mut out);
    }
    out
}

fn path_into(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        path_into(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path_into(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// Whether `leaf` (its hash) is leaf `m` of a tree of `n` leaves with root `root`, by its
/// audit path (RFC 6962 §2.1.1, verified as in RFC 9162 §2.1.3.2). Never panics.
pub fn verify(root: &Hash, n: u64, m: u64, leaf: &Hash, path: &[Hash]) -> bool {
    if m >= n || path.len() > MAX_PATH {
        return false;
    }
    let (mut f_n, mut s_n) = (m, n - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// A whole tree kept by the sender: every leaf hash (32 bytes per 16 KiB: 2 MiB per GiB) and
/// the roots of its complete, aligned subtrees (as much again), from which any leaf's audit
/// path takes O(log² n) hashes.
#[derive(Debug, Clone)]
pub struct Tree {
    /// `levels[l][i]`: the root of leaves `i·2ˡ .. (i+1)·2ˡ`, for complete subtrees only.
    levels: Vec<Vec<Hash>>,
    root: Hash,
}

impl Tree {
    /// The tree over these leaf hashes.
    pub fn new(leaves: Vec<Hash>) -> Tree {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = &levels[levels.len() - 1];
            let up = below
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(up);
        }
        let mut t = Tree {
            levels,
            root: empty_root(),
        };
        t.root = t.range_root(0, t.len());
        t
    }

    /// The tree of `data` (whole, in memory: for tests and small files).
    pub fn of(data: &[u8]) -> Tree {
        Tree::new(data.chunks(LEAF_SIZE).map(leaf_hash).collect())
    }

    /// The root of leaves `s..e`, as RFC 6962 splits them.
    fn range_root(&self, s: u64, e: u64) -> Hash {
        let len = e - s;
        if len == 0 {
            return empty_root();
        }
        if len.is_power_of_two() && s % len == 0 {
            let l = len.trailing_zeros() as usize;
            if let Some(h) = self.levels.get(l).and_then(|v| v.get((s / len) as usize)) {
                return *h;
            }
        }
        if len == 1 {
            return self.levels[0][s as usize];
        }
        let k = split(len);
        node_hash(&self.range_root(s, s + k), &self.range_root(s + k, e))
    }

    /// The root.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// Leaves.
    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Whether the tree has no leaves (a 0-byte file).
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// Leaf `m`'s hash.
    pub fn leaf(&self, m: u64) -> Option<Hash> {
        self.levels[0].get(usize::try_from(m).ok()?).copied()
    }

    /// Leaf `m`'s audit path (empty if out of range).
    pub fn path(&self, m: u64) -> Vec<Hash> {
        let mut out = Vec::new();
        let (mut s, mut e) = (0, self.len());
        if m >= e {
            return out;
        }
        // Down from the root, keeping the sibling of each step; the path lists them
        // leaf-first.
        while e - s > 1 {
            let k = split(e - s);
            if m < s + k {
                out.push(self.range_root(s + k, e));
                e = s + k;
            } else {
                out.push(self.range_root(s, s + k));
                s += k;
            }
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 6962's reference tree (the eight inputs of the Certificate Transparency test
    /// suite, `merkle_tree_test.cc`): its published roots for 1 to 8 leaves.
    #[test]
    fn rfc6962_test_vectors() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves: Vec<Hash> = inputs.iter().map(|d| leaf_hash(d)).collect();
        for (n, want) in roots.iter().enumerate() {
            assert_eq!(hex::encode(root(&leaves[..=n])), *want, "{} leaves", n + 1);
        }
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    proptest! {
        /// Every leaf of every tree up to 70 leaves verifies with its path, and nowhere
        /// else: not as another leaf, not with another leaf's hash, not with a path cut
        /// short or lengthened. (The leaf count comes from the offer's size.)
        #[test]
        fn every_path_verifies_only_where_it_belongs(n in 1u64..70, seed: u8) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[seed, i as u8, (i >> 8) as u8])).collect();
            let t = Tree::new(leaves.clone());
            for m in 0..n {
                let p = t.path(m);
                prop_assert!(verify(&t.root(), n, m, &leaves[m as usize], &p));
                if n > 1 {
                    let other = (m + 1) % n;
                    prop_assert!(!verify(&t.root(), n, other, &leaves[m as usize], &p));
                    prop_assert!(!verify(&t.root(), n, m, &leaves[other as usize], &p));
                    prop_assert!(!verify(&t.root(), n, m, &leaves[m as usize], &p[..p.len() - 1]));
                }
                let mut longer = p.clone();
                longer.push([0; 32]);
                prop_assert!(!verify(&t.root(), n, m, &leaves[m as usize], &longer));
            }
        }

        #[test]
        fn the_kept_tree_gives_the_reference_paths(n in 1u64..200, seed: u8) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[seed, i as u8, (i >> 8) as u8])).collect();
            let t = Tree::new(leaves.clone());
            prop_assert_eq!(t.root(), root(&leaves));
            for m in 0..n {
                prop_assert_eq!(t.path(m), audit_path(&leaves, m));
            }
        }

        #[test]
        fn verify_never_panics(n: u64, m: u64, path in proptest::collection::vec(any::<[u8; 32]>(), 0..80)) {
            let _ = verify(&[0; 32], n, m, &[1; 32], &path);
        }
    }
}
