"""Hard English sentence-boundary cases, written for this project, with where each comes from.

Categories follow the phenomena that Read et al. (2012, "Sentence Boundary Detection: A Long Solved
Problem?", COLING) and Kiss & Strunk (2006, "Unsupervised Multilingual Sentence Boundary
Detection", Computational Linguistics 32(4)) single out as the errors of rule- and
statistics-based splitters: abbreviations (inside and at the end of a sentence), initials, numbers,
ellipses, punctuation inside quotes and brackets, URLs / e-mail addresses and enumerations.
`constructed` cases were written here for one phenomenon each; `public domain` cases are verbatim
paragraphs of the named works (a real-text check). Each case is (category, source, text, gold
sentences); a splitter gets a case right when its sentences, stripped, equal the gold list.
"""
from __future__ import annotations

C = "constructed"
CASES = [
    # -- abbreviations inside a sentence
    ("abbreviation", C, "Dr. Smith arrived at noon. He was late.",
     ["Dr. Smith arrived at noon.", "He was late."]),
    ("abbreviation", C, "Mr. and Mrs. Patel moved to Leeds in May. They bought a bakery.",
     ["Mr. and Mrs. Patel moved to Leeds in May.", "They bought a bakery."]),
    ("abbreviation", C, "The U.S. economy grew by two percent last year.",
     ["The U.S. economy grew by two percent last year."]),
    ("abbreviation", C, "Bring something to read, e.g. a novel or a magazine. The trip is long.",
     ["Bring something to read, e.g. a novel or a magazine.", "The trip is long."]),
    ("abbreviation", C, "Use a soft brush, i.e. one with natural bristles, for the glaze.",
     ["Use a soft brush, i.e. one with natural bristles, for the glaze."]),
    ("abbreviation", C, "Prof. Okafor and Gen. Hale met at St. Mary's Hospital on Tuesday.",
     ["Prof. Okafor and Gen. Hale met at St. Mary's Hospital on Tuesday."]),
    ("abbreviation", C, "The contract was signed on Jan. 5 by both parties. Work began in March.",
     ["The contract was signed on Jan. 5 by both parties.", "Work began in March."]),
    ("abbreviation", C, "It weighs approx. 40 kg when full. Two people can lift it.",
     ["It weighs approx. 40 kg when full.", "Two people can lift it."]),
    ("abbreviation", C, "The case of Smith vs. Jones was heard in 1998. The court ruled for Jones.",
     ["The case of Smith vs. Jones was heard in 1998.", "The court ruled for Jones."]),
    ("abbreviation", C, "Track No. 7 is the longest on the album. It lasts nine minutes.",
     ["Track No. 7 is the longest on the album.", "It lasts nine minutes."]),
    ("abbreviation", C, "We sell pens, paper, ink, etc. at the front desk.",
     ["We sell pens, paper, ink, etc. at the front desk."]),
    ("abbreviation", C, "The train leaves at 9 a.m. and arrives before lunch.",
     ["The train leaves at 9 a.m. and arrives before lunch."]),
    ("abbreviation", C, "See Fig. 3 for the layout of the site. The entrance is on the left.",
     ["See Fig. 3 for the layout of the site.", "The entrance is on the left."]),
    ("abbreviation", C, "She earned a Ph.D. in chemistry at Oxford. Her thesis was on catalysts.",
     ["She earned a Ph.D. in chemistry at Oxford.", "Her thesis was on catalysts."]),
    ("abbreviation", C, "Acme Corp. reported higher sales. Its shares rose.",
     ["Acme Corp. reported higher sales.", "Its shares rose."]),
    # -- abbreviations that end a sentence
    ("abbreviation at end", C, "He works for Apple Inc. His sister works there too.",
     ["He works for Apple Inc.", "His sister works there too."]),
    ("abbreviation at end", C, "The meeting ended at 5 p.m. Everyone went home.",
     ["The meeting ended at 5 p.m.", "Everyone went home."]),
    ("abbreviation at end", C, "They packed tents, stoves, maps, etc. The hike began at dawn.",
     ["They packed tents, stoves, maps, etc.", "The hike began at dawn."]),
    ("abbreviation at end", C, "She moved back to the U.S. Her parents still live in Ohio.",
     ["She moved back to the U.S.", "Her parents still live in Ohio."]),
    ("abbreviation", "Botchan (Natsume, tr. Morri; the english-botchan asset), adapted",
     "That is not to be had by reducing the income of Mr. Koga, is it? Mr. Koga is going to "
     "Nobeoka.",
     ["That is not to be had by reducing the income of Mr. Koga, is it?",
      "Mr. Koga is going to Nobeoka."]),
    ("abbreviation", C, "Who called? Dr. Rao left a message for you.",
     ["Who called?", "Dr. Rao left a message for you."]),
    ("abbreviation", "Botchan (Natsume, tr. Morri; the english-botchan asset), adapted",
     "You need not be shy. Mr. Koga will be promoted.",
     ["You need not be shy.", "Mr. Koga will be promoted."]),
    ("abbreviation", C, "It was late. Dr. Smith left the ward.",
     ["It was late.", "Dr. Smith left the ward."]),
    ("abbreviation", C, "He waited by the gate. Prof. Li arrived at noon.",
     ["He waited by the gate.", "Prof. Li arrived at noon."]),
    # -- initials
    ("initials", C, "J. R. R. Tolkien wrote The Hobbit. It was published in 1937.",
     ["J. R. R. Tolkien wrote The Hobbit.", "It was published in 1937."]),
    ("initials", C, "The novel is by F. Scott Fitzgerald. It is set on Long Island.",
     ["The novel is by F. Scott Fitzgerald.", "It is set on Long Island."]),
    ("initials", C, "George W. Bush visited the plant in 2004. Workers lined the road.",
     ["George W. Bush visited the plant in 2004.", "Workers lined the road."]),
    ("initials", C, "The paper by A. B. Clarke and M. Ng appeared in Nature.",
     ["The paper by A. B. Clarke and M. Ng appeared in Nature."]),
    ("initials", C, "Ask H. G. for the keys. He has a spare set.",
     ["Ask H. G. for the keys.", "He has a spare set."]),
    # -- numbers, decimals and money
    ("numbers", C, "The trail is 3.5 km long. It climbs 200 m.",
     ["The trail is 3.5 km long.", "It climbs 200 m."]),
    ("numbers", C, "The firm lost $4.2 bn in 2020. Its rival gained 1.5 million customers.",
     ["The firm lost $4.2 bn in 2020.", "Its rival gained 1.5 million customers."]),
    ("numbers", C, "Inflation fell to 0.5% in June. Prices of fuel rose 3.25% anyway.",
     ["Inflation fell to 0.5% in June.", "Prices of fuel rose 3.25% anyway."]),
    ("numbers", C, "Install version 2.0.1 before Friday. Older versions will stop working.",
     ["Install version 2.0.1 before Friday.", "Older versions will stop working."]),
    ("numbers", C, "The ticket costs £12.50 for adults. Children travel free.",
     ["The ticket costs £12.50 for adults.", "Children travel free."]),
    ("numbers", C, "The population grew from 1.2 million to 1.8 million. Most newcomers came from abroad.",
     ["The population grew from 1.2 million to 1.8 million.",
      "Most newcomers came from abroad."]),
    ("numbers", C, "Water boils at 100 °C at sea level. At altitude it boils sooner.",
     ["Water boils at 100 °C at sea level.", "At altitude it boils sooner."]),
    ("numbers", C, "The score was 3-1 at half time. The second half ended 0-0.",
     ["The score was 3-1 at half time.", "The second half ended 0-0."]),
    # -- ellipses
    ("ellipsis", C, "I waited and waited... Nobody came.",
     ["I waited and waited...", "Nobody came."]),
    ("ellipsis", C, "The results were, well... not what we hoped for.",
     ["The results were, well... not what we hoped for."]),
    ("ellipsis", C, "He opened the door slowly . . . and stepped inside.",
     ["He opened the door slowly . . . and stepped inside."]),
    ("ellipsis", C, "She looked at the map… Then she turned left.",
     ["She looked at the map…", "Then she turned left."]),
    # -- quotes and brackets after the full stop
    ("quotes", C, 'He said, "I will be there at six." Then he hung up.',
     ['He said, "I will be there at six."', "Then he hung up."]),
    ("quotes", C, "She asked, 'Is it raining?' Nobody answered.",
     ["She asked, 'Is it raining?'", "Nobody answered."]),
    ("quotes", C, "“We won,” she said. “Now we rest.”",
     ["“We won,” she said.", "“Now we rest.”"]),
    ("quotes", C, '"Stop!" shouted the guard. The man kept running.',
     ['"Stop!" shouted the guard.', "The man kept running."]),
    ("quotes", C, '"Are you sure?" asked Maria.',
     ['"Are you sure?" asked Maria.']),
    ("brackets", C, "The bridge was closed for repairs. (It reopened in May.) Traffic is normal now.",
     ["The bridge was closed for repairs.", "(It reopened in May.)", "Traffic is normal now."]),
    ("brackets", C, "Results are in the appendix (see Table 2). The method is described below.",
     ["Results are in the appendix (see Table 2).", "The method is described below."]),
    ("brackets", C, "The river (the longest in the region) floods every spring.",
     ["The river (the longest in the region) floods every spring."]),
    # -- question and exclamation marks
    ("question and exclamation", C, "Where are you going? I need the car today!",
     ["Where are you going?", "I need the car today!"]),
    ("question and exclamation", C, "Did you really say that?! I cannot believe it.",
     ["Did you really say that?!", "I cannot believe it."]),
    ("question and exclamation", C, "What a day! We finished early. Shall we eat?",
     ["What a day!", "We finished early.", "Shall we eat?"]),
    # -- URLs and e-mail addresses
    ("url and e-mail", C, "Visit www.example.com for the timetable. Tickets go on sale today.",
     ["Visit www.example.com for the timetable.", "Tickets go on sale today."]),
    ("url and e-mail", C, "The form is at https://forms.example.org/apply.html and closes on Monday.",
     ["The form is at https://forms.example.org/apply.html and closes on Monday."]),
    ("url and e-mail", C, "Write to info@example.co.uk with questions. We reply within a day.",
     ["Write to info@example.co.uk with questions.", "We reply within a day."]),
    ("url and e-mail", C, "Send the file to j.doe@mail.example.com. Then call the office.",
     ["Send the file to j.doe@mail.example.com.", "Then call the office."]),
    ("url and e-mail", C, "Our blog moved to example.net. Old links still work.",
     ["Our blog moved to example.net.", "Old links still work."]),
    # -- numbered and lettered lists
    ("list", C, "1. Preheat the oven. 2. Mix the flour and sugar. 3. Bake for 20 minutes.",
     ["1. Preheat the oven.", "2. Mix the flour and sugar.", "3. Bake for 20 minutes."]),
    ("list", C, "There are two rules: 1) arrive on time and 2) bring your own lunch.",
     ["There are two rules: 1) arrive on time and 2) bring your own lunch."]),
    ("list", C, "a. Check the tyres. b. Check the oil. c. Check the lights.",
     ["a. Check the tyres.", "b. Check the oil.", "c. Check the lights."]),
    # -- plain sentences (no trap), mixed punctuation
    ("plain", C, "The museum opens at ten. It closes at six. Entry is free on Sundays.",
     ["The museum opens at ten.", "It closes at six.", "Entry is free on Sundays."]),
    ("plain", C, "Rain is expected tomorrow; bring a coat. The wind will be strong.",
     ["Rain is expected tomorrow; bring a coat.", "The wind will be strong."]),
    ("plain", C, "It was cold. Very cold.", ["It was cold.", "Very cold."]),
    ("plain", C, "Paris is the capital of France.", ["Paris is the capital of France."]),
    ("plain", C, "The lake froze in 1963. In 1964 it did not.",
     ["The lake froze in 1963.", "In 1964 it did not."]),
    ("plain", C, "Our team scored twice in the final minutes and won the cup for the first time since the club was founded.",
     ["Our team scored twice in the final minutes and won the cup for the first time since the "
      "club was founded."]),
    # -- real paragraphs (public domain)
    ("real paragraph", "public domain: Herman Melville, Moby-Dick (1851), ch. 1",
     "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in "
     "my purse, and nothing particular to interest me on shore, I thought I would sail about a "
     "little and see the watery part of the world. It is a way I have of driving off the spleen "
     "and regulating the circulation.",
     ["Call me Ishmael.",
      "Some years ago—never mind how long precisely—having little or no money in my purse, and "
      "nothing particular to interest me on shore, I thought I would sail about a little and see "
      "the watery part of the world.",
      "It is a way I have of driving off the spleen and regulating the circulation."]),
    ("real paragraph", "public domain: Jane Austen, Pride and Prejudice (1813), ch. 1",
     "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
     "must be in want of a wife. However little known the feelings or views of such a man may be "
     "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
     "surrounding families, that he is considered the rightful property of some one or other of "
     "their daughters.",
     ["It is a truth universally acknowledged, that a single man in possession of a good "
      "fortune, must be in want of a wife.",
      "However little known the feelings or views of such a man may be on his first entering a "
      "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that "
      "he is considered the rightful property of some one or other of their daughters."]),
    ("real paragraph", "public domain: Abraham Lincoln, Gettysburg Address (1863), Bliss copy",
     "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
     "conceived in Liberty, and dedicated to the proposition that all men are created equal. Now "
     "we are engaged in a great civil war, testing whether that nation, or any nation so "
     "conceived and so dedicated, can long endure. We are met on a great battle-field of that "
     "war. We have come to dedicate a portion of that field, as a final resting place for those "
     "who here gave their lives that that nation might live. It is altogether fitting and proper "
     "that we should do this.",
     ["Four score and seven years ago our fathers brought forth on this continent, a new nation, "
      "conceived in Liberty, and dedicated to the proposition that all men are created equal.",
      "Now we are engaged in a great civil war, testing whether that nation, or any nation so "
      "conceived and so dedicated, can long endure.",
      "We are met on a great battle-field of that war.",
      "We have come to dedicate a portion of that field, as a final resting place for those who "
      "here gave their lives that that nation might live.",
      "It is altogether fitting and proper that we should do this."]),
    ("real paragraph", "public domain: Lewis Carroll, Alice's Adventures in Wonderland (1865), ch. 1",
     "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
     "nothing to do: once or twice she had peeped into the book her sister was reading, but it "
     "had no pictures or conversations in it, “and what is the use of a book,” thought Alice "
     "“without pictures or conversations?”",
     ["Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
      "nothing to do: once or twice she had peeped into the book her sister was reading, but it "
      "had no pictures or conversations in it, “and what is the use of a book,” thought Alice "
      "“without pictures or conversations?”"]),
    ("real paragraph", "public domain: Arthur Conan Doyle, A Scandal in Bohemia (1891)",
     "To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any "
     "other name. In his eyes she eclipses and predominates the whole of her sex.",
     ["To Sherlock Holmes she is always the woman.",
      "I have seldom heard him mention her under any other name.",
      "In his eyes she eclipses and predominates the whole of her sex."]),
    ("real paragraph", "public domain: Charles Dickens, A Christmas Carol (1843), stave 1",
     "Marley was dead: to begin with. There is no doubt whatever about that. The register of his "
     "burial was signed by the clergyman, the clerk, the undertaker, and the chief mourner. "
     "Scrooge signed it: and Scrooge’s name was good upon ’Change, for anything he chose to put "
     "his hand to. Old Marley was as dead as a door-nail.",
     ["Marley was dead: to begin with.", "There is no doubt whatever about that.",
      "The register of his burial was signed by the clergyman, the clerk, the undertaker, and the "
      "chief mourner.",
      "Scrooge signed it: and Scrooge’s name was good upon ’Change, for anything he chose to put "
      "his hand to.",
      "Old Marley was as dead as a door-nail."]),
    # -- web-style paragraphs like CC-100's (constructed)
    ("web paragraph", C,
     "Our shop is open Mon.-Fri. from 9 a.m. to 6 p.m. and on Sat. until noon. Free parking is "
     "available behind the building. Call us on 555-0134 or e-mail shop@example.com for orders.",
     ["Our shop is open Mon.-Fri. from 9 a.m. to 6 p.m. and on Sat. until noon.",
      "Free parking is available behind the building.",
      "Call us on 555-0134 or e-mail shop@example.com for orders."]),
    ("web paragraph", C,
     "I bought this kettle two weeks ago. It boils 1.7 litres in about 3 min. The lid is a bit "
     "stiff, but overall I'm happy! Would I buy it again? Yes.",
     ["I bought this kettle two weeks ago.", "It boils 1.7 litres in about 3 min.",
      "The lid is a bit stiff, but overall I'm happy!", "Would I buy it again?", "Yes."]),
    ("web paragraph", C,
     "The council met on Wed. to discuss the new road. Mayor L. Chen said the plan would cost "
     "about $2.3 m. A vote is expected next month.",
     ["The council met on Wed. to discuss the new road.",
      "Mayor L. Chen said the plan would cost about $2.3 m.",
      "A vote is expected next month."]),
    ("web paragraph", C,
     "The U.K. and the E.U. agreed on a new deal in Dec. 2020. Talks had lasted four years.",
     ["The U.K. and the E.U. agreed on a new deal in Dec. 2020.", "Talks had lasted four years."]),
]

# Written after `split.repair` was designed on CASES, for its two rules' categories and their
# look-alikes (a lower-case start that must stay split; numbers that are not list markers): a
# check that the rules were not fitted to CASES alone.
HELD_OUT = [
    ("quotes", C, '"Why not?" replied the clerk. The shop was already closed.',
     ['"Why not?" replied the clerk.', "The shop was already closed."]),
    ("quotes", C, "“Run!” cried the boy, and everyone ran.",
     ["“Run!” cried the boy, and everyone ran."]),
    ("quotes", C, "He whispered, 'Is anyone there?' The house was silent.",
     ["He whispered, 'Is anyone there?'", "The house was silent."]),
    ("list", C, "4. Let the bread cool. 5. Slice and serve.",
     ["4. Let the bread cool.", "5. Slice and serve."]),
    ("list", C, "(1) Open the valve. (2) Wait ten seconds.",
     ["(1) Open the valve.", "(2) Wait ten seconds."]),
    ("numbers", C, "The vote was 52 to 48. The motion passed.",
     ["The vote was 52 to 48.", "The motion passed."]),
    ("plain", C, "Prices rose again! iPhone sales fell in March.",
     ["Prices rose again!", "iPhone sales fell in March."]),
    ("abbreviation", C, "Dr. Osei and Ms. Lind wrote the report. It runs to 40 pages.",
     ["Dr. Osei and Ms. Lind wrote the report.", "It runs to 40 pages."]),
]
