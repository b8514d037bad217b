"""Prompts for the MTP head's self-distillation data (tools/train_mtp_head.py), all written for
this project.

Two sets, disjoint in topics and in kinds of text:

- :func:`train_prompts` (the data the head is trained on): openings of plain text across
  domains (the Gemma 3 270M GGUF is the pre-trained model, so most prompts are text to continue),
  topic templates (encyclopedic, how-to, lists, Q&A, essays, stories, news), code (Python,
  JavaScript, TypeScript, C, C++, Java, Go, Rust, SQL, shell, HTML/CSS) as openings and as chat
  requests, chat turns in Gemma's template (single and multi-turn), and random-token
  prefixes (``mlc-mtp bench``'s prompt is random token ids; these are other draws, seeds 1000
  and up, never the bench's seed 0).  Version 1 of this list (the first head's 472 prompts) is
  kept in it unchanged.
- :func:`eval_prompts` (held out, never trained on): kinds the training set lacks (Ruby, Kotlin,
  Lua, PHP and Haskell code, YAML/JSON/CSV data, reviews, screenplays, sports reports, forecasts,
  diaries, riddles, support chats, ...) on topics it does not name.

The prompts of ``tests/runtime/test_mtp_real.py`` and ``benchmarks/mtp_speed.py`` are in neither
set, and no prompt is about friendship, the moons of Mars, sorting, planting trees or mountains
(version 1 does have the solar system and a list of the planets).
"""

from __future__ import annotations

import random

# --- version 1: the first head's prompts (training) ---------------------------------------------
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

# --- version 2: more kinds of text (training) --------------------------------------------------
PROSE_TOPICS = [
    "the human skeleton", "tides", "the Byzantine Empire", "penguins", "the telephone", "rainbows", "origami",
    "the Sahara desert", "wind turbines", "the violin", "bread baking", "the Moon landing", "coral reefs",
    "the French language", "microwave ovens", "the Vikings", "tea", "hurricanes", "the Great Barrier Reef",
    "sharks", "the printing of money", "solar panels", "the Aztecs", "elephants", "the compass", "cheese",
    "lightning", "the Ottoman Empire", "wolves", "railways", "paper", "the Arctic", "salmon", "the camera",
    "the Mongol Empire", "antibiotics", "ants", "the guitar", "deserts", "batteries", "the Incas", "owls",
    "the bicycle chain", "rice farming", "nuclear power", "the Panama Canal", "butterflies", "opera",
    "the periodic table", "public libraries", "the Suez Canal", "frogs", "3D printing", "the Cold War",
    "whales", "the microscope", "sourdough", "typhoons", "the Maya", "bats", "the radio", "wool",
    "the ozone layer", "chocolate", "the Hanseatic League", "kangaroos", "the zipper", "bridges",
    "the Black Death", "mushrooms", "satellites", "the human eye", "cotton", "the Eiffel Tower",
    "the Dead Sea", "robots", "the Persian Empire", "glass", "sleep", "maps", "the stock exchange",
    "the Red Cross", "fire fighting", "the alphabet", "spiders", "skyscrapers", "soap", "the calendar",
]

PROSE_TEMPLATES = [
    "{Topic}", "An introduction to {topic}\n\n", "{Topic} has a long history.",
    "Everything you need to know about {topic}.",
    "Ten surprising facts about {topic}:\n\n1.", "Q: What is the most important thing to know about {topic}?\nA:",
    "FAQ: {topic}\n\nQ: What is it?\nA:", "The science of {topic}, explained simply.",
    "Title: A Brief Guide to {Topic}\n\nSection 1:", "When I was ten years old, I became obsessed with {topic}.",
    "Lecture notes, week 3: {topic}\n\n-", "Pros and cons of {topic}\n\nPros:\n-",
    "{Topic}: a timeline\n\n", "Glossary of terms related to {topic}:\n\n",
    "The following article describes {topic} in detail.\n\n", "How has {topic} changed over the last hundred years?",
    "Teacher: Today we are going to talk about {topic}.\nStudent:", "Encyclopedia entry: {Topic}\n\n",
    "Here are the key points about {topic}:\n\n*", "A children's story about {topic}.\n\nOnce",
    "Some people think {topic} is boring, but", "News report: new research on {topic}\n\n",
    "Summary: {Topic}\n\nIn short,", "Quiz about {topic}\n\nQuestion 1:",
]

STORY_OPENINGS = [
    "The train pulled into the station two hours late, and", "Nobody in the village had ever seen a boat that large.",
    "\"Are you sure this is the right address?\" she asked.", "It started with a letter that had no return address.",
    "The detective looked at the broken window and", "On the morning of her twelfth birthday, Anna woke up to",
    "The spaceship's engines fell silent.", "My brother and I used to spend every summer at our aunt's farm.",
    "The last bakery in the city was about to close forever.", "He had been walking through the snow for hours when",
    "The museum guard noticed that one of the paintings had changed.",
    "The storm knocked out the power just after midnight.",
    "There was once a king who could not sleep.", "The new teacher arrived on a rainy Monday.",
    "Captain's log, day forty-two.", "The fox and the crow had been arguing for weeks.",
    "When the phone rang at three in the morning, I knew", "The old clock in the hallway stopped at exactly noon.",
    "Dear diary, today was the strangest day of my life.", "Lena had never flown in an airplane before.",
    "The river had flooded the lower town twice that spring.", "At the edge of the map, someone had written a warning:",
]

NEWS_AND_LETTERS = [
    "LONDON (Reuters) - The central bank left interest rates unchanged on Thursday,",
    "City council approves new bus routes\n\nThe city council voted on Tuesday to",
    "Local school wins national science competition\n\n", "Traffic update: the northbound lanes of the highway",
    "Dear Mr. Thompson,\n\nThank you for your letter of March 3.", "Hi team,\n\nQuick update on the project:",
    "To whom it may concern,\n\nI would like to recommend", "Dear customer,\n\nWe are sorry to inform you that",
    "Press release\n\nFOR IMMEDIATE RELEASE\n\n", "Meeting minutes\n\nAttendees:",
    "Job posting: Senior Accountant\n\nResponsibilities:\n-", "Hello Sarah,\n\nI hope you are well. I wanted to ask",
    "Notice to residents: water will be shut off", "Abstract\n\nBackground: Chronic pain affects",
    "1. Introduction\n\nIn recent years, deep neural networks have", "Terms and conditions\n\n1. Definitions\n\n",
]

LISTS_AND_QA = [
    "Shopping list:\n- milk\n- bread\n-", "To-do list for Saturday:\n1.", "Packing list for a beach trip:\n\n-",
    "The ten largest countries by area are:\n1.", "Common English irregular verbs:\n\ngo - went - gone\n",
    "Multiplication table of 7:\n7 x 1 = 7\n7 x 2 = 14\n", "Q: How many days are there in a leap year?\nA:",
    "Q: What is the chemical symbol for gold?\nA:", "Q: Who painted the Mona Lisa?\nA:",
    "Q: What is the square root of 144?\nA:", "Q: How many continents are there?\nA:",
    "Q: What language is spoken in Brazil?\nA:", "Q: What does DNA stand for?\nA:",
    "Question: Why do leaves change color in autumn?\nAnswer:", "Question: What is the speed of light?\nAnswer:",
    "Top 5 reasons to learn to cook:\n\n1.", "Steps to write a good resume:\n\nStep 1:",
    "Table of contents\n\n1. Introduction\n2.", "Vocabulary list (Spanish - English):\n\nperro - dog\ngato -",
    "Countries and their capitals:\n\nGermany: Berlin\nItaly:", "Alphabet: A, B, C, D,",
    "Prime numbers below 50: 2, 3, 5, 7,", "Even numbers: 2, 4, 6, 8,", "The Roman numerals are I, V, X,",
    "Chapter summaries\n\nChapter 1:", "Daily schedule\n\n7:00 - wake up\n7:30 -",
]

CODE_OPENINGS = [
    # Python
    "def read_lines(path):\n    \"\"\"Return the lines of a text file without trailing newlines.\"\"\"\n",
    "import os\nimport sys\n\n\ndef main():\n", "class BankAccount:\n    def __init__(self, owner, balance=0):\n",
    "from dataclasses import dataclass\n\n\n@dataclass\nclass Point:\n", "def is_palindrome(text):\n",
    "import json\n\nwith open(\"config.json\") as f:\n", "def count_words(text):\n    counts = {}\n",
    "# Compute the average of a list of numbers\nnumbers = [3, 5, 7, 9]\n", "def gcd(a, b):\n",
    "import random\n\n\ndef roll_dice(n):\n", "try:\n    value = int(input(\"Enter a number: \"))\n",
    "def binary_search(items, target):\n", "class Node:\n    def __init__(self, value):\n        self.value = value\n",
    "import re\n\nEMAIL = re.compile(", "def factorial(n):\n    if n == 0:\n", "async def fetch(session, url):\n",
    "import unittest\n\n\nclass TestMath(unittest.TestCase):\n", "with open(\"data.csv\") as f:\n    for line in f:\n",
    # JavaScript / TypeScript
    "const express = require('express');\nconst app = express();\n\n", "function debounce(fn, delay) {\n",
    "document.getElementById('button').addEventListener('click', () => {\n", "async function loadUsers() {\n",
    "export class Queue<T> {\n  private items: T[] = [];\n\n", "interface User {\n  id: number;\n  name: string;\n",
    "const sum = (numbers) => numbers.reduce(", "for (let i = 0; i < array.length; i++) {\n",
    # C / C++
    "#include <stdlib.h>\n#include <string.h>\n\nchar *duplicate(const char *s) {\n",
    "int max(int a, int b) {\n", "struct list {\n    int value;\n    struct list *next;\n};\n\n",
    "#include <iostream>\n#include <vector>\n\nint main() {\n",
    "template <typename T>\nT clamp(T value, T lo, T hi) {\n",
    "class Rectangle {\npublic:\n    Rectangle(double w, double h) : width(w), height(h) {}\n",
    # Java
    "public class HelloWorld {\n    public static void main(String[] args) {\n",
    "import java.util.ArrayList;\nimport java.util.List;\n\npublic class Inventory {\n",
    "public int fibonacci(int n) {\n", "@Override\npublic String toString() {\n",
    # Go
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n", "func reverse(s string) string {\n",
    "type Server struct {\n\taddr string\n", "if err != nil {\n",
    # Rust
    "fn main() {\n    let numbers = vec![1, 2, 3, 4, 5];\n", "pub struct Stack<T> {\n    items: Vec<T>,\n}\n\n",
    "use std::collections::HashMap;\n\nfn word_count(text: &str) -> HashMap<String, usize> {\n",
    "impl Display for Point {\n", "#[derive(Debug, Clone)]\nenum Shape {\n",
    # SQL
    "CREATE TABLE users (\n    id INTEGER PRIMARY KEY,\n", "SELECT customer_id, SUM(amount) AS total\nFROM payments\n",
    "INSERT INTO products (name, price) VALUES\n", "UPDATE employees\nSET salary = salary * 1.05\nWHERE",
    # shell
    "#!/bin/bash\n\n# Back up the home directory\n", "for file in *.txt; do\n", "$ git status\nOn branch main\n",
    "$ ls -la\ntotal 32\n", "#!/bin/sh\nset -e\n\nif [ ! -d build ]; then\n",
    # HTML / CSS / Markdown
    "<!DOCTYPE html>\n<html>\n<head>\n  <title>", "<ul>\n  <li>", "body {\n  margin: 0;\n  font-family:",
    "# Project Title\n\nA short description of the project.\n\n## Installation\n\n",
]

CODE_LANGUAGES = ["Python", "JavaScript", "C", "C++", "Java", "Go", "Rust", "TypeScript", "SQL", "Bash"]

CODE_TASKS = [
    "checks whether a number is prime", "reads a file and counts its lines", "converts Celsius to Fahrenheit",
    "merges two dictionaries", "finds the largest element in a list", "removes duplicates from a list",
    "computes the factorial of a number", "reverses the words in a sentence", "checks if a string is a palindrome",
    "returns the n-th Fibonacci number", "parses a date string", "counts the vowels in a string",
    "computes the average of an array", "validates an email address", "flattens a nested list",
    "finds the intersection of two sets", "generates a random password", "computes the greatest common divisor",
    "converts a string to title case", "sums the digits of an integer",
]

CHAT_QUESTIONS_2 = [
    "What is the capital of Canada?", "How do I make a cup of green tea?", "Can you recommend three classic novels?",
    "What is the difference between weather and climate?", "Explain photosynthesis in simple terms.",
    "How many bones are in the human body?", "Write a short poem about the ocean.", "What is machine learning?",
    "How do I change a light bulb safely?", "What are the primary colors?", "Give me a tip for studying.",
    "What is the boiling point of water in Fahrenheit?", "Who invented the telephone?", "Write a limerick about a cat.",
    "What should I pack for a camping trip?", "How does a rainbow form?", "What is the Pythagorean theorem?",
    "Explain what a black hole is.", "Suggest a name for a pet goldfish.", "How do vaccines work?",
    "What is the meaning of the word 'ephemeral'?", "Write an email asking my manager for a day off.",
    "What are three ways to save energy at home?", "How do I calculate the area of a circle?",
    "Tell me a fun fact about octopuses.", "Why do we have leap years?", "Translate 'thank you' into French.",
    "What is the difference between a virus and bacteria?", "Describe the water cycle.", "What is an adjective?",
    "How do I make my handwriting neater?", "Plan a simple three-day workout routine.", "What is inflation?",
    "Write a two-sentence horror story.", "Explain how a bicycle works.", "What is the population of India?",
    "Give me a synonym for 'happy'.", "What is 15% of 80?",
    "Write a short story about a lost key.", "How do bees make honey?", "What is the largest animal on Earth?",
    "Summarize the plot of Romeo and Juliet.", "Why is exercise good for the brain?", "What does a CPU do?",
    "Explain recursion to a beginner.", "What is the difference between a list and a tuple in Python?",
    "How do I center a div in CSS?", "What is a REST API?", "Explain what Git is used for.",
    "What does HTTP stand for?", "Write a SQL query that counts the rows in a table named orders.",
    "How do I read a file line by line in Python?", "What is the difference between == and === in JavaScript?",
    "Explain pointers in C.", "What is a hash map?", "Fix this code: print('hello'",
    "What is Big O notation?", "Write a haiku about winter.", "Give me five words that rhyme with 'light'.",
    "Write a birthday message for my grandmother.", "What are good questions to ask in a job interview?",
    "How long should I boil pasta?", "How do magnets work?",
    "What is the speed of sound?", "Explain the rules of tic-tac-toe.", "Why do cats purr?",
]

MULTI_TURN = [
    [("Hi! Can you help me plan a dinner party?", "Of course! How many guests are you expecting, and do any of them "
      "have dietary restrictions?"), "Eight people, and two of them are vegetarian."],
    [("What is the capital of Australia?", "The capital of Australia is Canberra."), "Why isn't it Sydney?"],
    [("Write a Python function that adds two numbers.", "```python\ndef add(a, b):\n    return a + b\n```"),
     "Now make it work for a list of numbers."],
    [("I want to learn to play the guitar.", "That's a great goal! Do you already own a guitar, and have you played "
      "any instrument before?"), "Yes, I have an acoustic guitar but I have never played anything."],
    [("Translate 'where is the train station' into German.", "Wo ist der Bahnhof?"), "And into Italian?"],
    [("What is 25 times 4?", "25 times 4 is 100."), "And what is that divided by 8?"],
    [("Can you explain what an API is?", "An API (application programming interface) is a set of rules that lets "
      "one program talk to another."), "Can you give me an example?"],
    [("Tell me a story about a dragon.", "Once upon a time, a small dragon named Ember lived in a cave above a "
      "quiet village. Unlike other dragons, Ember was afraid of fire."), "What happened next?"],
    [("How do I make scrambled eggs?", "Whisk two eggs with a pinch of salt, melt butter in a pan over low heat, "
      "add the eggs and stir gently until they are just set."), "Can I add cheese?"],
    [("What's the difference between RAM and storage?", "RAM is short-term memory the computer uses while it runs "
      "programs; storage keeps your files when the power is off."), "So which one should I upgrade for gaming?"],
    [("Give me a word that means 'very big'.", "Enormous."), "Another one?"],
    [("Write a SQL query to list all customers.", "```sql\nSELECT * FROM customers;\n```"),
     "Only those from Spain, sorted by name."],
]

SYSTEM_STYLE_CHATS = [
    "You are a helpful assistant. Answer briefly.\n\nWhat is the freezing point of water?",
    "Answer in one word: what color is the sky on a clear day?",
    "Rewrite this sentence to be more formal: 'Hey, can you send me the file?'",
    "Correct the grammar: 'She don't like apples.'", "Summarize in one sentence: The meeting was long, but in the "
    "end the team agreed to move the deadline by two weeks and hire one more designer.",
    "Classify the sentiment of this review as positive or negative: 'The food was cold and the service was slow.'",
    "Extract the names from this sentence: 'Maria met John and Ahmed at the station.'",
    "Continue the list: apple, banana, cherry,", "Write a product description for a reusable water bottle.",
    "List three pros and three cons of working from home.",
]

# --- held out: kinds and topics the training prompts do not cover ------------------------------
EVAL_PROMPTS = [
    ("new-kind/code-ruby", "class ShoppingCart\n  def initialize\n    @items = []\n  end\n\n"),
    ("new-kind/code-ruby", "def greet(name)\n"),
    ("new-kind/code-kotlin", "fun main() {\n    val fruits = listOf(\"apple\", \"pear\", \"plum\")\n"),
    ("new-kind/code-kotlin", "data class Book(val title: String, val author: String)\n\nfun "),
    ("new-kind/code-lua", "local function split(str, sep)\n"),
    ("new-kind/code-php", "<?php\n\nfunction connect_database($host, $user) {\n"),
    ("new-kind/code-haskell", "module Main where\n\nsquare :: Int -> Int\n"),
    ("new-kind/data-yaml", "version: '3'\nservices:\n  web:\n    image: nginx\n"),
    ("new-kind/data-json", "{\n  \"name\": \"weather-station\",\n  \"version\": \"1.0.0\",\n"),
    ("new-kind/data-csv", "date,city,temperature\n2024-01-01,Oslo,-5\n2024-01-01,Rome,11\n"),
    ("new-kind/markdown-table", "| Lighthouse | Country | Height |\n|---|---|---|\n"),
    ("new-kind/review", "Review: I bought this vacuum cleaner last month and"),
    ("new-kind/review", "Three stars. The hotel room was clean, but"),
    ("new-kind/screenplay", "INT. KITCHEN - NIGHT\n\nMARTHA stands by the sink.\n\nMARTHA\n"),
    ("new-kind/sports", "The home team came back from two goals down in the second half"),
    ("new-kind/forecast", "Tomorrow's forecast: morning fog, then"),
    ("new-kind/diary", "Tuesday. Woke up late again. The lighthouse keeper's cottage"),
    ("new-kind/riddle", "Riddle: I have keys but open no locks. What am I?\nAnswer:"),
    ("new-topic/support-chat", "<start_of_turn>user\nMy internet keeps disconnecting every few minutes. What can I do?"
     "<end_of_turn>\n<start_of_turn>model\n"),
    ("new-topic/support-chat", "<start_of_turn>user\nI was charged twice for my subscription.<end_of_turn>\n"
     "<start_of_turn>model\n"),
    ("new-topic/chat", "<start_of_turn>user\nHow does a submarine dive and surface?<end_of_turn>\n"
     "<start_of_turn>model\n"),
    ("new-topic/chat", "<start_of_turn>user\nWhat are the basic steps of the tango?<end_of_turn>\n"
     "<start_of_turn>model\n"),
    ("new-topic/chat", "<start_of_turn>user\nWrite a Ruby method that returns the last element of an array."
     "<end_of_turn>\n<start_of_turn>model\n"),
    ("new-kind/math-word",
     "A farmer has 17 sheep and buys 8 more. Then half of them are sold. How many are left?\n\nSolution:"),
    ("new-kind/itinerary", "Day 1: Arrive in Lisbon, check in at the hotel,"),
    ("new-kind/changelog", "## [2.3.0] - 2024-05-01\n### Added\n-"),
    ("new-topic/encyclopedic", "Lighthouses are towers that"),
    ("new-topic/encyclopedic", "The accordion is a musical instrument"),
    ("new-topic/encyclopedic", "Sand dunes form when"), ("new-topic/encyclopedic", "Falconry is"),
    ("new-kind/legal", "Article 5. Obligations of the tenant\n\n5.1"),
    ("new-kind/code-swift", "import Foundation\n\nstruct Temperature {\n    var celsius: Double\n"),
    ("new-kind/code-r", "library(ggplot2)\n\ndata <- read.csv(\"heights.csv\")\n"),
    ("new-kind/log", "2024-03-01 12:00:01 INFO  Server started on port 8080\n2024-03-01 12:00:05 WARN  "),
    ("new-kind/latex", "\\begin{theorem}\nLet $f$ be a continuous function on $[a, b]$. Then"),
]


RANDOM_PREFIXES = 32  # random-token prompts
RANDOM_SEED = 1000  # the bench's prompt uses seed 0; these use 1000, 1001, ...
SEED = 11  # which templates and languages each topic and task gets


def chat_prompt(question: str) -> str:
    """One user turn in Gemma's chat format, ready for the model's answer (``<bos>`` added later)."""
    return f"<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n"


def chat_turns(turns: list[tuple[str, str]], question: str) -> str:
    """Earlier ``(user, model)`` turns, then ``question``, in Gemma's chat format, ready for the answer."""
    done = "".join(f"<start_of_turn>user\n{u}<end_of_turn>\n<start_of_turn>model\n{m}<end_of_turn>\n" for u, m in turns)
    return done + chat_prompt(question)


def _capital(topic: str) -> str:
    return topic[0].upper() + topic[1:]


def train_prompts() -> list[tuple[str, str]]:
    """``(kind, text)`` of every training prompt (deterministic; :data:`SEED`)."""
    rng = random.Random(SEED)
    v1 = [("v1/opening", t) for t in OPENINGS]
    v1 += [("v1/template", t.format(topic=topic, Topic=_capital(topic))) for topic in TOPICS for t in TEMPLATES]
    v1 += [("v1/chat", chat_prompt(q)) for q in CHAT_QUESTIONS]
    prose = [("prose", t.format(topic=topic, Topic=_capital(topic)))
             for topic in PROSE_TOPICS for t in rng.sample(PROSE_TEMPLATES, 5)]
    code_chat = [("code-chat", chat_prompt(f"Write a {lang} function that {task}."))
                 for task in CODE_TASKS for lang in rng.sample(CODE_LANGUAGES, 3)]
    return (v1 + prose + [("story", t) for t in STORY_OPENINGS] + [("news-letter", t) for t in NEWS_AND_LETTERS]
            + [("list-qa", t) for t in LISTS_AND_QA] + [("code", t) for t in CODE_OPENINGS] + code_chat
            + [("chat", chat_prompt(q)) for q in CHAT_QUESTIONS_2 + SYSTEM_STYLE_CHATS]
            + [("chat-multi-turn", chat_turns(turns, q)) for *turns, q in MULTI_TURN])


def eval_prompts() -> list[tuple[str, str]]:
    """``(kind, text)`` of the held-out prompts: ``new-kind/*`` are kinds of text the training set
    lacks, ``new-topic/*`` known kinds on topics it does not name."""
    return list(EVAL_PROMPTS)


def random_prefixes(vocab_size: int, count: int = RANDOM_PREFIXES) -> list[list[int]]:
    """``count`` prompts of random token ids (``<bos>`` first), 16 to 127 tokens, drawn like the
    bench's prompt (ids in ``[1000, 200000)``) with seeds ``RANDOM_SEED + k``."""
    prompts = []
    for k in range(count):
        rng = random.Random(RANDOM_SEED + k)
        n = rng.randint(16, 127)
        prompts.append([2] + [rng.randrange(min(1000, vocab_size // 4), min(vocab_size, 200000)) for _ in range(n)])
    return prompts
