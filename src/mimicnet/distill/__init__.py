"""Distillation: ensembles of teachers (members chosen on validation), transfer sets (augmented images
labelled once with the teacher's logits), and the wiring of a student run to its transfer set and
teacher (student.train_run). Imports core, data, models and train."""
