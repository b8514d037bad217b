"""Prompts for the MTP head's self-distillation data (tools/train_mtp_head.py).

Written for this project: openings of plain text across domains (the Gemma 3 270M GGUF is the
pre-trained model, so most prompts are text to continue), a few chat-formatted turns, and
random-token prefixes (the prompt ``mlc-mtp bench`` uses is made of random token ids; these are
other draws, seeds 1000 and up, never the bench's seed 0).  Each prompt has a split, ``train``
or ``heldout``, fixed by its index (every tenth prompt is held out).
"""

from __future__ import annotations

import random

OPENINGS = [
    "The three primary colors are",
    "The capital of France is",
    "Once upon a time, in a village at the edge of a great forest,",
    "In 1969, the first humans landed on the Moon. The mission",
    "Photosynthesis is the process by which plants",
    "To make a simple tomato sauce, start by",
    "The main difference between a virus and a bacterium is",
    "Dear Sir or Madam,\n\nI am writing to",
    "Chapter 1\n\nThe rain had not stopped for three days when",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "import numpy as np\n\n\ndef normalize(x):\n",
    "SELECT name, COUNT(*) FROM orders",
    "Q: What is the boiling point of water at sea level?\nA:",
    "Q: Who wrote Pride and Prejudice?\nA:",
    "The French Revolution began in 1789 when",
    "A healthy breakfast should include",
    "The stock market fell sharply on Monday after",
    "Here are five tips for better sleep:\n1.",
    "The mitochondria is often called the powerhouse of the cell because",
    "In mathematics, a prime number is",
    "The quick brown fox jumps over the lazy dog. This sentence",
    "My favorite season is autumn because",
    "The Great Wall of China was built",
    "Water is made of two hydrogen atoms and",
    "Breaking news: scientists have discovered",
    "The recipe calls for two cups of flour,",
    "To install the package, run the following command:",
    "In the beginning God created the heaven and the earth.",
    "It was the best of times, it was the worst of times,",
    "The Industrial Revolution changed the way people",
    "Machine learning is a field of computer science that",
    "The Pythagorean theorem states that",
    "Roses are red,\nViolets are blue,\n",
    "Step 1: Preheat the oven to 180 degrees.\nStep 2:",
    "class Stack:\n    def __init__(self):\n",
    "#include <stdio.h>\n\nint main(void) {\n",
    "The population of Tokyo is",
    "Climate change is caused by",
    "The human heart has four chambers:",
    "Abstract. We propose a new method for",
    "Once there was a little robot who wanted to",
    "The best way to learn a new language is",
    "Monday: 9:00 meeting with the design team\nTuesday:",
    "Ingredients:\n- 2 eggs\n- 1 cup of milk\n-",
    "The Roman Empire was one of the largest empires in history. At its height,",
    "Electricity flows through a circuit when",
    "The first rule of good writing is",
    "function add(a, b) {\n",
    "Albert Einstein was born in 1879 in",
    "The ocean covers about seventy percent of",
    "Thank you for your order! Your package",
    "The following is a conversation between a teacher and a student.\nTeacher:",
    "List of the planets in our solar system:\n1. Mercury\n2.",
    "The theory of evolution by natural selection",
    "In economics, inflation refers to",
    "She opened the old wooden box and found",
    "The meeting has been moved to Thursday because",
    "A haiku about the sea:\n",
    "The difference between weather and climate is",
    "1, 2, 3, 4, 5, 6, 7,",
    "Monday, Tuesday, Wednesday,",
    "January, February, March,",
    "The word 'algorithm' comes from",
    "How to change a flat tire:\n1.",
    "The history of the bicycle begins",
    "Python is a programming language that",
    "The sun rose slowly over the mountains, and",
    "In a small town in Italy, there lived a baker named",
    "The human brain contains about",
    "Welcome to our website! Here you can",
    "The most important invention of the twentieth century was",
    "Frequently asked questions\n\nQ: How long does shipping take?\nA:",
    "The cat sat on the mat and",
    "Hydrogen is the lightest element. It",
    "for i in range(10):\n",
    "The Amazon rainforest is home to",
    "Good morning everyone, and thank you for coming. Today I want to talk about",
    "The causes of the First World War include",
    "A balanced diet contains",
    "The old man looked at the sea and said,",
]

TOPICS = [
    "the solar system", "volcanoes", "the printing press", "honey bees", "the Internet", "chess",
    "the human immune system", "ancient Egypt", "electric cars", "the water cycle", "jazz music",
    "the Renaissance", "black holes", "coffee", "the Olympic Games", "earthquakes", "dinosaurs",
    "the moon", "vaccines", "the Silk Road", "renewable energy", "octopuses", "the piano",
    "cloud computing", "the Amazon river", "democracy", "glaciers", "the steam engine",
]

TEMPLATES = [
    "{Topic} is",
    "Here is a short history of {topic}.",
    "Five interesting facts about {topic}:\n1.",
    "Q: Can you explain {topic} to a child?\nA:",
    "# {Topic}\n\n## Introduction\n\n",
    "Most people do not know that {topic}",
    "A short poem about {topic}:\n\n",
    "The future of {topic} depends on",
    "Why is {topic} important? There are several reasons.",
    "Write an essay about {topic}.\n\nEssay:\n",
    "In this lesson we will learn about {topic}. First,",
    "My grandfather used to tell me stories about {topic}.",
]

CHAT_QUESTIONS = [
    "What is the capital of Japan?", "Write a haiku about rain.", "How do airplanes fly?",
    "Give me three ideas for a birthday party.", "What is 12 times 13?", "Explain gravity in one paragraph.",
    "Translate 'good morning' into Spanish.", "Write a Python function that reverses a string.",
    "What causes the seasons on Earth?", "Tell me a joke about computers.", "Summarize the story of Cinderella.",
    "What are the benefits of exercise?", "How do I boil an egg?", "Name five fruits that are red.",
    "Why is the sky blue?", "What is a noun?", "Describe a cat to someone who has never seen one.",
    "List the days of the week.", "What does a doctor do?", "Write a short thank-you note to a friend.",
    "How many legs does a spider have?", "What is the largest ocean?", "Give me a recipe for pancakes.",
    "What is the difference between a lake and a sea?",
]

RANDOM_PREFIXES = 32  # random-token prompts
RANDOM_SEED = 1000  # the bench's prompt uses seed 0; these use 1000, 1001, ...


def chat_prompt(question: str) -> str:
    """One user turn in Gemma's chat format, ready for the model's answer (``<bos>`` added later)."""
    return f"<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n"


def text_prompts() -> list[str]:
    """Every text prompt: openings, topic templates, chat turns (in that order)."""
    templated = [t.format(topic=topic, Topic=topic[0].upper() + topic[1:]) for topic in TOPICS for t in TEMPLATES]
    return OPENINGS + templated + [chat_prompt(q) for q in CHAT_QUESTIONS]


def random_prefixes(vocab_size: int, count: int = RANDOM_PREFIXES) -> list[list[int]]:
    """``count`` prompts of random token ids (``<bos>`` first), 16 to 127 tokens, drawn like the
    bench's prompt (ids in ``[1000, 200000)``) with seeds ``RANDOM_SEED + k``."""
    prompts = []
    for k in range(count):
        rng = random.Random(RANDOM_SEED + k)
        n = rng.randint(16, 127)
        prompts.append([2] + [rng.randrange(min(1000, vocab_size // 4), min(vocab_size, 200000)) for _ in range(n)])
    return prompts


def split_of(index: int) -> str:
    """``heldout`` for every tenth prompt, else ``train``."""
    return "heldout" if index % 10 == 9 else "train"
