"""The outer loop: the learning-to-learn model (learner), meta-training (trainer) and one-shot evaluation."""
