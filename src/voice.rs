//! (in progress: voice and chatbot cores land in a following commit)
