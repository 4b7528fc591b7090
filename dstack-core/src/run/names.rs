//! Run names like `cowardly-goose-1`: an adjective, an animal, and a counter that the store
//! keeps per adjective-animal pair.

use std::hash::{BuildHasher, Hasher};

const ADJECTIVES: &[&str] = &[
    "able",
    "agile",
    "amber",
    "ancient",
    "bold",
    "brave",
    "breezy",
    "bright",
    "brisk",
    "calm",
    "careful",
    "cheerful",
    "clever",
    "cosmic",
    "cowardly",
    "crimson",
    "curious",
    "daring",
    "dazzling",
    "eager",
    "electric",
    "elegant",
    "fancy",
    "fearless",
    "fierce",
    "fluffy",
    "frosty",
    "gentle",
    "giant",
    "gleaming",
    "golden",
    "graceful",
    "grumpy",
    "happy",
    "hasty",
    "hidden",
    "honest",
    "humble",
    "icy",
    "jolly",
    "keen",
    "kind",
    "lazy",
    "lively",
    "lucky",
    "mellow",
    "mighty",
    "misty",
    "modest",
    "nimble",
    "noble",
    "odd",
    "patient",
    "placid",
    "plucky",
    "polite",
    "proud",
    "quick",
    "quiet",
    "rapid",
    "rusty",
    "shiny",
    "shy",
    "silent",
    "silver",
    "sleepy",
    "sly",
    "smooth",
    "snappy",
    "sneaky",
    "soft",
    "spicy",
    "steady",
    "stormy",
    "sunny",
    "swift",
    "tender",
    "tidy",
    "tiny",
    "tough",
    "tricky",
    "vivid",
    "wandering",
    "wild",
    "wise",
    "witty",
    "zealous",
];

const ANIMALS: &[&str] = &[
    "alpaca", "ant", "badger", "bat", "bear", "beaver", "bison", "boar", "buffalo", "camel", "cat",
    "cheetah", "cobra", "cougar", "cow", "coyote", "crab", "crane", "crow", "deer", "dingo",
    "dolphin", "donkey", "dove", "duck", "eagle", "eel", "elk", "falcon", "ferret", "finch", "fox",
    "frog", "gazelle", "gecko", "goat", "goose", "gopher", "gorilla", "hare", "hawk", "hedgehog",
    "heron", "horse", "hyena", "ibis", "impala", "jackal", "jaguar", "koala", "lemur", "leopard",
    "lion", "lizard", "llama", "lynx", "mole", "moose", "moth", "mouse", "newt", "octopus",
    "otter", "owl", "panda", "panther", "parrot", "pelican", "penguin", "pigeon", "puma", "quail",
    "rabbit", "raccoon", "raven", "seal", "shark", "sheep", "sloth", "snail", "sparrow", "squid",
    "swan", "tiger", "toad", "turtle", "walrus", "wasp", "weasel", "whale", "wolf", "wombat",
    "yak", "zebra",
];

/// A random `adjective-animal` pair.
#[must_use]
pub fn random_base() -> String {
    // `RandomState` is seeded from the OS: enough randomness for names, no extra crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(super::now_ms().unsigned_abs());
    let r = hasher.finish();
    let adjective = ADJECTIVES[usize::try_from(r % ADJECTIVES.len() as u64).unwrap_or(0)];
    let animal = ANIMALS[usize::try_from((r >> 32) % ANIMALS.len() as u64).unwrap_or(0)];
    format!("{adjective}-{animal}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_two_known_words() {
        for _ in 0..100 {
            let base = random_base();
            let (a, b) = base.split_once('-').expect("two words");
            assert!(ADJECTIVES.contains(&a) && ANIMALS.contains(&b), "{base}");
        }
    }

    #[test]
    fn words_are_unique_and_simple() {
        for list in [ADJECTIVES, ANIMALS] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len());
            assert!(
                list.iter()
                    .all(|w| w.bytes().all(|b| b.is_ascii_lowercase()))
            );
        }
    }
}
